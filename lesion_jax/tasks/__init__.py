"""Tasks assemble a model, its input pipeline, its steps, the training loop and evaluation.

Experiments (absl entry points) parse flags into a task config and call these; so do the
multi-stage pipelines (two_stage), which chain several tasks in one process.
"""
