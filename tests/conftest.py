"""Shared fixtures. The tiny synthetic dataset (32 px, 64/16/16 examples) is generated once per
test session into a temporary TFDS data_dir; nothing is downloaded."""
import os

import lesion_jax

lesion_jax.setup_runtime()  # the compilation cache and XLA:CPU flags the verbs run with

import pytest  # noqa: E402

TINY = "synthetic_lesions/tiny"


def _find_real_sample() -> str:
  """The real ISIC 2017 sample (read in place, never copied): $LESION_JAX_ISIC2017_SAMPLE, or
  the `shared/data` folder beside this checkout."""
  return os.path.abspath(os.environ.get("LESION_JAX_ISIC2017_SAMPLE") or os.path.join(
      os.path.dirname(__file__), "..", "..", "shared", "data", "isic2017_sample"))


@pytest.fixture(scope="session")
def real_sample_dir() -> str:
  return _find_real_sample()


@pytest.fixture(scope="session")
def tiny_dataset() -> str:
  """The TFDS name of the tiny synthetic config the tests train on."""
  return TINY


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  pipeline.get_builder(TINY, data_dir)
  return data_dir


@pytest.fixture(scope="session")
def damaged_jpeg():
  """Bytes of a JPEG with 2000 bytes overwritten mid-stream: OpenCV still decodes it (the rest
  of the image flat grey), with only a libjpeg warning on stderr."""
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  image = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (9, 9), 3)
  data = bytearray(cv2.imencode(".jpg", image)[1].tobytes())
  data[len(data) // 2:len(data) // 2 + 2000] = rng.integers(0, 255, 2000, dtype=np.uint8).tobytes()
  assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is not None
  return bytes(data)
