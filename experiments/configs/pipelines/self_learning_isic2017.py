r"""Pipeline 1 at archive scale, iterated: K-means pseudo-masks of all 2000 ISIC 2017 Training images of a
Part 3-only download -> a U-Net (segmentation/unet_selflearned_isic2017.py) -> it relabels those images -> a
new U-Net on its confident masks (rounds). No manual mask trains or selects anything: each round's checkpoint
is picked on the pseudo-masks of a tenth of Training. Each round is then scored on an archive with masks
(scored_on): the ISIC 2017 sample's 150 Training masks (a part of Training, what settings are chosen on; those
images are among the 2000, their masks are never trained on) and its 150 Validation masks (reported).

  python -m experiments.train --config=experiments/configs/pipelines/self_learning_isic2017.py --workdir=runs/sl_isic \
      --config.segmenter.input.manual_dir=/data/isic2017_256 --config.scored_on.manual_dir=/data/isic2017_sample

Wall time: about 20 minutes per round alone on a 2-core CPU. Measured (2026-12-07,
docs/results/isic2017_self_learning.md): Validation JA 0.616 after round 0, 0.622 after round 1 (sample
Training masks 0.754 -> 0.774); K-means itself 0.567.
"""
import os

from experiments import common
from lesion_jax.pipelines.self_learning import self_learning

SEGMENTER = os.path.join(os.path.dirname(__file__), os.pardir, "segmentation", "unet_selflearned_isic2017.py")


def get_config() -> self_learning.SelfLearningConfig:
  return self_learning.SelfLearningConfig(
      segmenter=common.load_config_file(SEGMENTER), rounds=1,
      scored_on=self_learning.ScoredOn(dataset="isic2017", splits=("train", "validation")))
