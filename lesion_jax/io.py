"""File output used by every experiment: atomic writes of JSON, PNG, npz and raw bytes, and the
one mask codec.

Everything a run writes goes through here, so an interrupted run never leaves a half-written file:
we write to a temporary file in the same directory and `os.replace` it into place. Run outputs
are written by process 0 only; `all_processes=True` is for work split across hosts (artifact
stages), where each process writes the files it computed.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from typing import Any

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


def is_primary_process() -> bool:
  """True on the one process that writes run outputs (always, on a single host)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def atomic_write_bytes(path: str | os.PathLike, data: bytes, all_processes: bool = False) -> None:
  """Writes `data` to `path` so that readers see either the old file or the complete new one.
  In a multi-host run only the primary process writes, so hosts never race on shared files;
  `all_processes=True` writes from whichever process calls (for files only it computed)."""
  if not all_processes and not is_primary_process():
    return
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _to_builtin(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _to_builtin(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_builtin(v) for v in value]
  if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, str):
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def write_json(path: str | os.PathLike, obj: Any, all_processes: bool = False) -> None:
  """Atomically writes `obj` as indented, key-sorted JSON (numpy and jax values converted)."""
  text = json.dumps(_to_builtin(obj), indent=2, sort_keys=True)
  atomic_write_bytes(path, (text + "\n").encode(), all_processes)


def read_json(path: str | os.PathLike) -> Any:
  with open(path) as f:
    return json.load(f)


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of an RGB (H, W, 3) or single-channel (H, W) uint8 image."""
  import cv2  # pylint: disable=g-import-not-at-top

  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"encode_png needs uint8, got {image.dtype}")
  if image.ndim == 3 and image.shape[-1] == 3:
    image = image[..., ::-1]  # OpenCV writes BGR
  elif image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
  if not ok:
    raise ValueError(f"could not encode an image of shape {image.shape} as PNG")
  return buf.tobytes()


def write_png(path: str | os.PathLike, image: np.ndarray, all_processes: bool = False) -> None:
  """Atomically writes an RGB or single-channel uint8 image as PNG."""
  atomic_write_bytes(path, encode_png(image), all_processes)


# ----------------------------------------------------------------------------------------------
# The mask codec: the one rule for lesion masks stored as PNG. Written as {0, 255}; read back
# with nonzero = lesion, so {0, 1} and {0, 255} files decode alike (the tf.data pipeline applies
# the same `> 0` rule).


def encode_mask(mask: Any) -> bytes:
  """PNG bytes ({0, 255}, single channel) of a mask (H, W) or (H, W, 1); nonzero = lesion."""
  m = np.asarray(mask)
  if m.ndim == 3 and m.shape[-1] == 1:
    m = m[..., 0]
  if m.ndim != 2:
    raise ValueError(f"mask must have shape (H, W) or (H, W, 1), got {m.shape}")
  return encode_png((m > 0).astype(np.uint8) * 255)


def decode_mask(data: bytes) -> np.ndarray:
  """bool (H, W) from the PNG (or other image) bytes of a mask: nonzero = lesion (colour images
  are converted to grey first, as tf.io.decode_image(channels=1) does)."""
  import cv2  # pylint: disable=g-import-not-at-top

  mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if len(data) else None
  if mask is None:
    raise ValueError("could not decode mask bytes (empty, corrupt or not an image)")
  if mask.ndim == 3:
    mask = cv2.cvtColor(mask[..., :3], cv2.COLOR_BGR2GRAY) if mask.shape[-1] >= 3 else mask[..., 0]
  return mask > 0


def read_mask_file(path: str | os.PathLike) -> np.ndarray:
  """bool (H, W) from a mask file (see `decode_mask`); FileNotFoundError when it is missing,
  ValueError naming the file when it cannot be decoded."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    data = f.read()
  try:
    return decode_mask(data)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e


def write_mask(path: str | os.PathLike, mask: Any, all_processes: bool = False) -> None:
  """Atomically writes a mask as a {0, 255} PNG (see `encode_mask`)."""
  atomic_write_bytes(path, encode_mask(mask), all_processes)


# ----------------------------------------------------------------------------------------------
# Named arrays (e.g. superpixel label maps and feature tables) as .npz


def encode_npz(arrays: dict[str, Any]) -> bytes:
  """Compressed .npz bytes of named arrays (no pickled objects)."""
  import io as _io  # pylint: disable=g-import-not-at-top

  buf = _io.BytesIO()
  np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  return buf.getvalue()


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  with np.load(os.fspath(path), allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def write_npz(path: str | os.PathLike, arrays: dict[str, Any], all_processes: bool = False) -> None:
  atomic_write_bytes(path, encode_npz(arrays), all_processes)


class ImageError(ValueError):
  """An input image that cannot be used; the message names the file and the problem."""


_STDERR_LOCK = threading.Lock()
# libjpeg's warnings for a damaged stream (OpenCV still returns an image, partly flat grey).
_JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid JPEG", "Bogus")


def _imdecode_jpeg_checked(path: str, data: bytes):
  """cv2.imdecode of a JPEG, refusing one that libjpeg had to patch up. libjpeg reports damage
  (a bad Huffman code, a premature end of a segment) only as a warning on stderr, so stderr is
  captured at the file-descriptor level for the decode (one decode at a time)."""
  import cv2  # pylint: disable=g-import-not-at-top
  with _STDERR_LOCK, tempfile.TemporaryFile() as captured:
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
      image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
      os.dup2(saved, 2)
      os.close(saved)
    captured.seek(0)
    messages = captured.read().decode(errors="replace")
  damage = [line for line in messages.splitlines() if any(d in line for d in _JPEG_DAMAGE)]
  if damage:
    raise ImageError(f"{path}: corrupt JPEG data ({damage[0].strip()}); the decoded image would be damaged")
  if messages.strip():  # anything else is not ours to swallow
    sys.stderr.write(messages)
  return image


# EXIF orientation (tag 0x0112) → the array operation that shows the image as cameras and viewers do.
_EXIF_ORIENTATION = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1), 8: lambda a: np.rot90(a, 1)}


# PIL modes of single-channel sources. OpenCV widens some of them to 3 or 4 equal channels (a
# gray+alpha PNG decodes as BGRA), so the channel count alone would let them pass as colour.
# Palette images ("P") are not judged by their palette: a colour GIF may hold only greys.
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _image_facts(data: bytes) -> dict:
  """EXIF orientation, frame count and whether the source is grayscale, where the file says (PIL
  reads only the headers)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io as pyio  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(pyio.BytesIO(data)) as im:
      return {"orientation": int(im.getexif().get(0x0112, 1) or 1), "frames": int(getattr(im, "n_frames", 1)),
              "gray": im.mode in _GRAY_MODES}
  except Exception:  # pylint: disable=broad-except  (OpenCV decoded it; the facts are optional)
    return {"orientation": 1, "frames": 1, "gray": False}


def read_rgb_image_with_notes(path: str | os.PathLike, min_size: int = 1) -> tuple[np.ndarray, list[str]]:
  """`read_rgb_image`, plus notes on what was done to show the file as a viewer does: an EXIF
  orientation applied, the first frame of an animation used."""
  image, facts = _read_rgb(path, min_size)
  notes = []
  if facts["orientation"] in _EXIF_ORIENTATION:
    notes.append(f"EXIF orientation {facts['orientation']} applied")
  if facts["frames"] > 1:
    notes.append(f"animated: first of {facts['frames']} frames used")
  return image, notes


def read_rgb_image(path: str | os.PathLike, min_size: int = 1) -> np.ndarray:
  """Reads an image file as uint8 RGB (H, W, 3), or raises ImageError naming file and reason.

  Dermoscopy methods here rely on colour, so grayscale (by the file's own pixel format, even
  when the decoder widens it to colour channels) and images with an alpha channel are refused
  rather than silently converted. 16-bit images are scaled to 8 bits. A JPEG damaged
  mid-stream is refused. The EXIF orientation is applied (a phone photo comes out as displayed).
  """
  return _read_rgb(path, min_size)[0]


def _read_rgb(path: str | os.PathLike, min_size: int = 1) -> tuple[np.ndarray, dict]:
  """The validated reader (see read_rgb_image): the image and the facts read from its header."""
  import cv2  # pylint: disable=g-import-not-at-top

  path = os.fspath(path)
  if os.path.isdir(path):
    raise ImageError(f"{path}: is a directory, not an image file")
  if os.path.islink(path) and not os.path.exists(path):
    raise ImageError(f"{path}: broken symbolic link (to {os.readlink(path)})")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ImageError(f"{path}: cannot read file ({e.strerror or e})") from e
  if not data:
    raise ImageError(f"{path}: file is empty")
  if data[:2] == b"\xff\xd8":  # JPEG
    image = _imdecode_jpeg_checked(path, data)
  else:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if image is None:
    raise ImageError(f"{path}: not a decodable image (corrupt or unsupported format)")
  if image.dtype == np.uint16:
    image = (image // 257).astype(np.uint8)
  elif image.dtype != np.uint8:
    raise ImageError(f"{path}: unsupported pixel type {image.dtype}")
  facts = _image_facts(data)
  if image.ndim == 2 or image.shape[-1] == 1 or facts["gray"]:
    raise ImageError(f"{path}: grayscale image; dermoscopy needs RGB colour")
  if image.shape[-1] == 4 and image[..., 3].min() == np.iinfo(image.dtype).max:
    image = image[..., :3]  # a fully opaque alpha channel holds nothing (OpenCV decodes GIFs so)
  if image.shape[-1] == 4:
    raise ImageError(f"{path}: image has an alpha channel (RGBA); save it as RGB")
  if image.shape[-1] != 3:
    raise ImageError(f"{path}: unexpected {image.shape[-1]} channels")
  h, w = image.shape[:2]
  if min(h, w) < min_size:
    raise ImageError(f"{path}: image is {w}x{h} px, smaller than the minimum {min_size} px")
  image = image[..., ::-1]
  if facts["orientation"] in _EXIF_ORIENTATION:
    image = _EXIF_ORIENTATION[facts["orientation"]](image)
  return np.ascontiguousarray(image), facts
