"""The networks, as Flax modules only, each registered by name (`registry`):

    from lesion_jax import models
    net = models.UNet(features=16, levels=4)            # or models.get("unet", features=16, levels=4)
    models.names("classifier")                          # ('lenet5', 'alexnet', 'resnet18', 'resnet50')
"""
from lesion_jax.models import classifiers, dcgan, fcn, fcrn, inpainting, lfn, maskrcnn, unet  # noqa: F401  (register)
from lesion_jax.models.classifiers import AlexNet, LeNet5, ResNet
from lesion_jax.models.dcgan import Discriminator, Generator
from lesion_jax.models.fcn import FCN
from lesion_jax.models.fcrn import FCRN
from lesion_jax.models.inpainting import PConvUNet
from lesion_jax.models.lfn import LFN
from lesion_jax.models.maskrcnn import MaskRCNN
from lesion_jax.models.registry import family_of, get, names, register
from lesion_jax.models.unet import UNet

__all__ = ["AlexNet", "Discriminator", "FCN", "FCRN", "Generator", "LFN", "LeNet5", "MaskRCNN",
           "PConvUNet", "ResNet", "UNet", "family_of", "get", "names", "register"]
