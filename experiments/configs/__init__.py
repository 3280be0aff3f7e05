"""Config files of the verbs: each `get_config()` returns a task's or a pipeline's typed config, and
its docstring gives the command, the expected wall time and the measured result with its docs page.
`python -m experiments.train --config=experiments/configs/<family>/<name>.py --workdir=runs/<name>`;
any field by its dotted path: `--config.run.num_steps=500`, `--config.input.manual_dir=/data/isic2017`."""
