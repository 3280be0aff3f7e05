"""TFDS dataset builders; importing this package registers them with TFDS."""
from lesion_jax.data.builders import synthetic_lesions  # pylint: disable=unused-import
