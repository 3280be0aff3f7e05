"""Pipeline 3a, purification (Bisla et al., CVPR-W 2019): hairs and rulers filled by a partial-conv inpainter.
Here: `task` (InpaintingTask, train_two_phase, purified_images), `steps`, `losses`, `ops`, `holes`, `metrics`."""
