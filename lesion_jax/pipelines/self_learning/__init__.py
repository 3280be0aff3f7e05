"""Pipeline 1, self-learning annotation (Kamalakannan et al., IJCSIT 2019): K-means → U-Net → crops → classifiers.
Here: `two_stage` (the paper's framework and Table 2) and `self_learning` (iterative relabelling rounds)."""
