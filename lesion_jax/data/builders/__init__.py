"""TFDS dataset builders; importing this package registers them with TFDS.

`synthetic_lesions` renders itself; `isic2016`, `isic2017`, `isic2018`, `ph2`, `ham10000` and the
dermoscopic-feature ground truths `isic2017_features` (ISIC 2017 Part 2) and `isic2018_features`
(ISIC 2018 Task 2) read archives the user downloaded by hand (pass their folder as manual_dir;
each module's docstring and MANUAL_DOWNLOAD_INSTRUCTIONS give the layout). Their shared conventions (features, the `512`
and `full` configs, bad-example handling, Apache Beam) are described in `common`.
"""
# pylint: disable=unused-import
from lesion_jax.data.builders import synthetic_lesions
from lesion_jax.data.builders import ham10000
from lesion_jax.data.builders import isic2016
from lesion_jax.data.builders import isic2017
from lesion_jax.data.builders import isic2017_features
from lesion_jax.data.builders import isic2018
from lesion_jax.data.builders import isic2018_features
from lesion_jax.data.builders import ph2
