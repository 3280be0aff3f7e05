r"""Iterative self-learning: K-means pseudo-masks → U-Net → the U-Net relabels every unlabelled
image → a new U-Net on its confident masks → ...
(lesion_jax/pipelines/self_learning/self_learning.py).

  python -m experiments.self_learning --workdir=runs/self_learning --rounds=2 [--transductive] \
      [--holdout=0.2] [--start=ground_truth --transductive] [any train_segmenter flag]

No manual mask trains, selects or flags anything (except with --start=ground_truth, where round 0
is the supervised U-Net and later rounds train on the manual masks plus its confident masks of the
--test_split images); metrics.json lists, per round, the pseudo-masks'
Jaccard against the ground truth (reporting only) and the --test_split scores; figures/rounds.png
plots both. Each round is an ordinary segmentation run in <workdir>/round_<r> (evaluate and
predict take it). Resumable: re-running continues where it stopped.
"""
from absl import app, flags

from experiments import common
from lesion_jax.artifacts import relabel
from lesion_jax.pipelines.self_learning import self_learning

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_integer("rounds", 2, "Relabelling rounds after the K-means one (0: the paper's single U-Net).")
flags.DEFINE_bool("transductive", False, "Relabel and train on the --test_split images too (their pixels, "
                  "never their masks): the semi-supervised use of unlabelled target images; scores are "
                  "then not those of a model that never saw them.")
flags.DEFINE_enum("start", "kmeans", list(self_learning.STARTS), "Round 0's masks: kmeans (the paper's; no "
                  "manual mask anywhere) or ground_truth (semi-supervised self-training, needs --transductive: "
                  "round 0 is the supervised U-Net, later rounds add its confident masks of the --test_split images).")
flags.DEFINE_float("relabel_min_confidence", relabel.RelabelConfig().min_confidence,
                   "A relabelled mask whose map's mean |2p - 1| over the lesion and its doubtful "
                   "surroundings is below this is uncertain (left out of the next round).")
common.define_segmenter_flags()


def main(argv):
  del argv
  common.init_distributed()
  seg = common.segmenter_config_from_flags()
  config = self_learning.SelfLearningConfig(
      segmenter=seg, kmeans=common.kmeans_config_from_flags(),
      relabel=relabel.RelabelConfig(min_confidence=FLAGS.relabel_min_confidence),
      rounds=FLAGS.rounds, transductive=FLAGS.transductive, start=FLAGS.start, artifact_dir=FLAGS.artifact_dir)
  common.run_directory(FLAGS.workdir)
  result = self_learning.SelfLearningPipeline(config).run(FLAGS.workdir)
  for row in result["rounds"]:
    trained = row["pseudo_masks"].get(seg.run.train_split, {}).get("pseudo_mask_jaccard")
    print(f"round {row['round']} (on {row['trained_on']} masks): pseudo-mask JA "
          f"{trained if trained is None else round(trained, 4)}, test JA {row['test/jaccard']:.4f}")


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/pipelines/self_learning.py")
