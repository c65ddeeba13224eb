"""Models: plain `nn.Module`s whose constructors take typed arguments (from `_target_`)."""

from dlcourse.models.alexnet import AlexNet
from dlcourse.models.classical import NearestNeighbor, TemplateNCC
from dlcourse.models.cnn import CNN
from dlcourse.models.inpainting import ConvInpaint, MLPInpaint
from dlcourse.models.linear import LinearClassifier
from dlcourse.models.mlp import MLP

__all__ = [
    "AlexNet",
    "CNN",
    "ConvInpaint",
    "LinearClassifier",
    "MLP",
    "MLPInpaint",
    "NearestNeighbor",
    "TemplateNCC",
]
