"""Pipeline packages: one folder per pipeline that has parts no other pipeline uses (after
big_vision's per-project folders).

A pipeline package holds its task (`task.py`: the config dataclasses and the registered
`base.Task`), and whatever only it needs: its train and predict steps (`steps.py`), losses
(`losses.py`), data ops (`ops.py`) and metrics (`metrics.py`). The shared layers
(lesion_jax/train/steps.py and losses.py, lesion_jax/eval/metrics/, lesion_jax/data/ops/,
lesion_jax/models/) keep only what two or more pipelines use; a package imports them, never the
other way round. `lesion_jax/tasks/__init__.py` imports each package's task module, so its task
name is registered for config.json.
"""
