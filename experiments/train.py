r"""Trains (or resumes) any task or pipeline from a config file, scores it, records where its
numbers come from.

  python -m experiments.train --config=experiments/configs/segmentation/unet.py --workdir=runs/unet \
      [--config.run.num_steps=500] [--config.input.dataset=isic2017 --config.input.manual_dir=/data/isic2017]

--config is a Python file whose get_config() returns a task's or a pipeline's config
(experiments/configs/); every field can be overridden by its dotted path (--config.<field>=<value>:
numbers, true/false, none, comma-separated tuples), an unknown field is refused by name. Writes into
--workdir what the task writes (config.json, metrics.json, checkpoints/, figures/, ...) and
provenance.json (config file, overrides, command, date, commit, machine, wall time), which
`experiments.report` puts beside every number. Re-running with the same config resumes; each
invocation that trained (one preempted, then resumed, too) is appended to provenance.json's
`invocations`, so a resumed run keeps its first command.
"""
import time

from absl import flags, logging
import jax

from experiments import common
from lesion_jax import provenance
from lesion_jax.pipelines.purification import task as purification
from lesion_jax.tasks import base, runner
from lesion_jax.train import loop

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file (experiments/configs/...py) whose get_config() gives the run's config.")
common.define_workdir_flag()
flags.mark_flag_as_required("config")


def main(argv):
  del argv
  common.init_distributed()
  config = common.config_from_file(FLAGS.config)
  run = base.for_config(config)
  common.run_directory(FLAGS.workdir)
  start, code = time.perf_counter(), provenance.commit()  # the code the run starts from

  def record(finished: bool) -> None:
    provenance.record(FLAGS.workdir, FLAGS.config, common.CONFIG_OVERRIDES, time.perf_counter() - start,
                      code=code, finished=finished)

  try:
    if isinstance(run, base.Pipeline):
      scores = run.run(FLAGS.workdir)
    elif isinstance(run, purification.InpaintingTask) and not run.config.finetune_from:
      scores = purification.train_two_phase(run.config, FLAGS.workdir)  # the paper's Adam then SGD phases
    else:
      scores = runner.run(run, FLAGS.workdir)
  except loop.Preempted:
    # Its steps are in the checkpoint the resumed run starts from, so it is part of the run's
    # provenance; an invocation refused or failed (another config, a busy workdir) trained nothing kept.
    if jax.process_index() == 0:
      try:
        record(False)
      except OSError as e:  # the preemption's own exit, under way, matters more than this record
        logging.warning("provenance.json not updated: %s", e)
    raise
  if jax.process_index() == 0:
    record(True)
  common.print_scores({k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and "fold" not in k})


if __name__ == "__main__":
  common.run_verb(main)
