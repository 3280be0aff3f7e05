r"""Pipeline 4: the modified AlexNet on lesions blacked out by Mask R-CNN's masks, 5-fold cross-validation
over Training, SGD (AlexNet's recipe: rate 0.01, momentum 0.9, weight decay 5e-4).

  python -m experiments.train --config=experiments/configs/maskrcnn/maskrcnn.py --workdir=runs/maskrcnn
  python -m experiments.train --config=experiments/configs/classification/alexnet_crops_5fold.py --workdir=runs/alexnet \
      [--config.crop.segmenter_workdir=runs/maskrcnn]

Wall time: about 15 minutes after Mask R-CNN on a 2-core CPU. Measured: not yet as this config (SGD, the paper's
optimiser); Table II's rows on docs/results/pipeline4_mask_alexnet.md used Adam, width 0.5, 300 steps on s128.
"""
from lesion_jax.tasks import classification
from lesion_jax.train.state import OptimizerConfig


def get_config() -> classification.ClassifierConfig:
  config = classification.ClassifierConfig(
      model=classification.ClassifierModelConfig(name="alexnet"), folds=5,
      optimizer=OptimizerConfig(name="sgd", warmup_steps=50), source="crops",
      crop=classification.LesionCropConfig(segmenter_workdir="runs/maskrcnn"))
  return classification.with_optimizer_defaults(config)
