"""Pipeline 3b, generation (Bisla et al., CVPR-W 2019): de-coupled or coupled DCGANs for the scarce classes.
Here: `task` (GANConfig, GANTask), `steps`, `losses`, `state` (GANState) and `metrics` (FD-derm, KID)."""
