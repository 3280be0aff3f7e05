"""Tasks: the shared tasks (segmentation, classification) on one contract (base.Task), run by one
runner (runner.py); every other task and pipeline lives in its package under lesion_jax/pipelines/.

Importing this package registers every task and pipeline (one line per pipeline package), so a
workdir's config.json can name its task. Multi-stage pipelines (two_stage, self_learning) chain
runner calls of several tasks in one process.
"""
from lesion_jax.tasks import classification, segmentation  # noqa: F401  (registers the shared tasks)
from lesion_jax.pipelines.gan import task as gan  # noqa: F401  ("gan")
from lesion_jax.pipelines.lesion_index import feature_network, network, task as lesion_index  # noqa: F401  ("lesion_index", "lesion_index_network", "feature_network")
from lesion_jax.pipelines.maskrcnn import task as maskrcnn  # noqa: F401  ("maskrcnn")
from lesion_jax.pipelines.purification import task as inpainting  # noqa: F401  ("inpainting")
from lesion_jax.pipelines.self_learning import self_learning, two_stage  # noqa: F401  ("self_learning", "two_stage")
