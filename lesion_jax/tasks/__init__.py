"""Tasks: one module per pipeline on one contract (base.Task), run by one runner (runner.py).

Importing this package registers every task, so a workdir's config.json can name its task.
Multi-stage pipelines (two_stage) chain runner calls of several tasks in one process.
"""
from lesion_jax.tasks import classification, feature_network, gan, inpainting, lesion_index, segmentation  # noqa: F401  (registers the tasks)
from lesion_jax.pipelines.maskrcnn import task as maskrcnn  # noqa: F401  (registers "maskrcnn")
from lesion_jax.tasks import self_learning, two_stage  # noqa: F401  (registers the pipelines)
