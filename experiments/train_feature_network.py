r"""Trains a Lesion Feature Network (Li and Shen 2018, ISIC 2017 task 2) on superpixel patches and
scores it on the test split.

  python -m experiments.train_feature_network --workdir=runs/lfn \
      [--dataset=synthetic_lesions/features64] [--variant=lfn] [--num_steps=3000] [--batch_size=64]
  python -m experiments.train_feature_network --workdir=runs/lfn_isic --dataset=isic2017_features \
      --manual_dir=/data/isic2017 --patch.size=56

Every field of the task config (lesion_jax/pipelines/lesion_index/feature_network.py:
FeatureNetworkConfig) is a flag, by its dotted path (`--patch.min_fraction=0.5`,
`--balance.keep_probability=0.1,1,1,1,1`) and, where the name is unique, by its last part
(`--variant=lfn_wide`, `--nobatchnorm`, `--noweighted_loss`). Superpixels: the dataset's own
(isic2017_features) or SLIC artifacts computed once per split (stored under
<data_dir>/lesion_jax_artifacts or --artifact_dir). Writes
config.json, metrics.json (test/<feature>_auc, _ap, _sensitivity, _specificity, test/mean_auc,
test/accuracy, test/confusion_matrix), checkpoints/ (latest and best by the validation mean AUC),
TensorBoard events, history.json and figures/ (patches per class, confusion matrix, curves).
"""
from absl import app, flags

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax.pipelines.lesion_index import feature_network
from lesion_jax.tasks import runner
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
common.define_workdir_flag()
# The task reads neither input.image_size (patches have side patch.size) nor input.augment.
_UNREAD = {leaf.path for leaf in config_lib.leaves(feature_network.FeatureNetworkConfig())
           if leaf.path == "input.image_size" or leaf.path.startswith("input.augment.")}
# Its step decay is --decay_every / --decay_factor: they set the optimizer's step_decay fields.
_UNREAD |= {"optimizer.decay_every", "optimizer.decay_factor"}
common.define_config_flags(feature_network.FeatureNetworkConfig(),
                           aliases={"optimizer": "optimizer.name", "patch_size": "patch.size"}, skip=_UNREAD)


def main(argv):
  del argv
  common.init_distributed()
  config = common.config_from_flags(feature_network.FeatureNetworkConfig())
  # Refuse bad flags before minutes of superpixels (and before config.json is written).
  feature_network.FeatureNetworkTask(config).check(sharding.make_mesh(), [("run.test_split", config.run.test_split)])
  common.run_directory(FLAGS.workdir)
  common.print_scores(runner.run(feature_network.FeatureNetworkTask(config), FLAGS.workdir))


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/lesion_index/lfn.py")
