"""Pipeline 4's Mask R-CNN lesion segmenter (the mask-then-AlexNet paper): `task` (MaskRCNNConfig,
MaskRCNNTask, composed with the segmentation task's LesionMasks), `steps` (train and predict
steps), `losses` (the four Mask R-CNN terms), `ops` (lesion_instances: instances from a lesion
mask) and `metrics` (box AP and the paper's image-level Table I). Its network is
lesion_jax/models/maskrcnn.py (`models.get("mask_rcnn")`), built on the static-shape detection
ops of lesion_jax/detection/.
"""
