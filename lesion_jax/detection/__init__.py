"""Static-shape detection ops and the Mask R-CNN built on them (boxes, NMS, RoIAlign, targets)."""
