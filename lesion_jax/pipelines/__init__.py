"""Pipeline packages: one folder per pipeline that has parts no other pipeline uses (after
big_vision's per-project folders).

  gan/            pipeline 3b, DCGAN generation: task, steps, losses, state (GANState), metrics (FD, KID)
  lesion_index/   pipeline 5, the Lesion Indexing Network: task (FCRN task, LIN pipeline),
                  feature_network (the LFN task), ops, licu
  maskrcnn/       pipeline 4's Mask R-CNN segmenter: task, steps, losses, ops, metrics (box AP)
  purification/   pipeline 3a, hair/ruler purification: task (the inpainter), steps, losses, ops,
                  holes (random hole masks), metrics (hole scores, OpenCV baselines)
  self_learning/  pipeline 1, self-learning annotation: two_stage and self_learning pipelines

A pipeline package holds its task (`task.py`: the config dataclasses and the registered
`base.Task`), and whatever only it needs: its train and predict steps (`steps.py`), losses
(`losses.py`), data ops (`ops.py`, made with `data.ops.named`, not in the shared op registry)
and metrics (`metrics.py`). The shared layers (lesion_jax/tasks/ with base, runner and the
segmentation and classification tasks; lesion_jax/train/steps.py, losses.py and state.py;
lesion_jax/eval/ and eval/metrics/; lesion_jax/data/ops/; lesion_jax/artifacts/;
lesion_jax/models/, the one model registry of Flax modules) keep only what two or more pipelines
use; a package imports them, never the other way round (but for the classifier's lazy import of
the purification task, whose inpainter runs it reads for `--source=purified`).
`lesion_jax/tasks/__init__.py` imports each package's task modules, one line per package, so
their task names are registered for config.json.
"""
