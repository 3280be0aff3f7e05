"""Reading, checking, resizing and encoding the image and mask files of one example.

`load_example` makes the stored example of a `Record` as `LoadSpec` says (long side at most
`max_size`, aspect kept, never enlarged; masks area-resized and thresholded at 0.5; unresized
JPEGs stored byte for byte), or raises `BadExampleError` with the example's id and the reason
(corrupt or non-RGB image, unreadable mask, mask size different from the image). Its parts
(`read_mask`, `decode_image_file`, `target_size`, the resize and encode functions) serve the
builders whose examples hold more than an image and a lesion mask.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from lesion_jax import io
from lesion_jax.data.builders.errors import BadExampleError
from lesion_jax.data.builders.index import Record

JPEG_QUALITY = 95  # of re-encoded (resized) JPEG images


@dataclasses.dataclass(frozen=True)
class LoadSpec:
  """How examples are stored: `max_size` (None = native) and the image encoding."""
  max_size: int | None
  image_format: str  # "jpeg" or "png"


def decode_image_file(path: str, what: str) -> np.ndarray:
  """The file's pixels as stored (cv2.IMREAD_UNCHANGED: any depth and channel count), or
  io.ImageError naming the file and `what` it should have been when it cannot be read or decoded."""
  import cv2  # pylint: disable=g-import-not-at-top

  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise io.ImageError(f"{path}: cannot read {what} ({e.strerror or e})") from e
  pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
  if pixels is None:
    raise io.ImageError(f"{path}: not a decodable {what} (corrupt, empty or unsupported)")
  return pixels


def read_mask(path: str | os.PathLike) -> np.ndarray:
  """A lesion mask file as bool (H, W), or io.ImageError naming the file and the problem.

  Accepts single-channel or grey (equal-channel) images, 8 or 16 bit; values {0, 1} are taken as
  they are, anything else is thresholded at half the range (so JPEG noise falls on its side).
  """
  path = os.fspath(path)
  mask = decode_image_file(path, "mask image")
  if mask.dtype not in (np.uint8, np.uint16):
    raise io.ImageError(f"{path}: unsupported mask pixel type {mask.dtype}")
  if mask.ndim == 3:
    colour = mask[..., :3]
    if np.any(colour != colour[..., :1]):
      raise io.ImageError(f"{path}: mask has colour (its channels differ); expected a "
                          "single-channel binary mask")
    mask = colour[..., 0]
  if mask.max() <= 1:
    return mask == 1
  return mask > np.iinfo(mask.dtype).max // 2


def target_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
  """(height, width) with the long side at most `max_size`, aspect kept, never enlarged."""
  if max_size is None or max(height, width) <= max_size:
    return height, width
  scale = max_size / max(height, width)
  return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 RGB resized to (height, width) by area averaging (no aliasing when shrinking)."""
  import cv2  # pylint: disable=g-import-not-at-top

  if image.shape[:2] == tuple(size):
    return image
  return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """bool mask resized to (height, width): area average of {0, 1}, thresholded at 0.5."""
  import cv2  # pylint: disable=g-import-not-at-top

  if mask.shape[:2] == tuple(size):
    return mask
  area = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
  return area >= 0.5


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """JPEG bytes of a uint8 RGB image."""
  import cv2  # pylint: disable=g-import-not-at-top

  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise ValueError(f"could not encode an image of shape {image.shape} as JPEG")
  return buf.tobytes()


def is_plain_rgb_jpeg(data: bytes) -> bool:
  """True for an 8-bit, 3-component, Huffman-coded JPEG: bytes TensorFlow's decoder reads as
  RGB. CMYK, 12-bit or arithmetic-coded files (which OpenCV reads but TF does not) are False."""
  if data[:2] != b"\xff\xd8":
    return False
  i = 2
  while i + 4 <= len(data):
    if data[i] != 0xFF:
      return False
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
      i += 2
      continue
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
      if i + 10 > len(data):
        return False
      return marker in (0xC0, 0xC1, 0xC2) and data[i + 4] == 8 and data[i + 9] == 3
    if marker == 0xDA:  # scan data before any frame header
      return False
    i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
  return False


def load_example(record: Record, spec: LoadSpec) -> dict[str, Any]:
  """The stored example of `record`: checked, resized and encoded, or a BadExampleError."""
  try:
    image = io.read_rgb_image(record.image)
  except io.ImageError as e:
    raise BadExampleError(record.id, f"bad image: {e}") from e
  height, width = image.shape[:2]
  size = target_size(height, width, spec.max_size)
  example = {"id": record.id, **record.values}
  if record.mask is not None:
    try:
      mask = read_mask(record.mask)
    except io.ImageError as e:
      raise BadExampleError(record.id, f"bad mask: {e}") from e
    if mask.shape != (height, width):
      raise BadExampleError(
          record.id, f"mask {record.mask} is {mask.shape[1]}x{mask.shape[0]} px but its image "
          f"{record.image} is {width}x{height} px")
    example["mask"] = io.encode_png(resize_mask(mask, size).astype(np.uint8) * 255)
  if spec.image_format == "jpeg":
    with open(record.image, "rb") as f:
      raw = f.read()
    # Unresized JPEGs are stored as they are: no second lossy encoding at native size.
    example["image"] = raw if size == (height, width) and is_plain_rgb_jpeg(raw) else (
        encode_jpeg(resize_image(image, size)))
  else:
    example["image"] = io.encode_png(resize_image(image, size))
  return example

