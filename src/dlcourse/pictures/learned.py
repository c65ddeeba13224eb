"""What the first layer learned: templates (weights that see the whole image), convolution
filters and the maps they make of a few test images."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dlcourse.pictures.drawing import captioned, grid, stretch, titled

MAX_TEMPLATES = 100  # hidden units shown for a wide first layer
MAX_MAPS = 16  # channels shown per image in activations.png


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout, batch norm's running statistics) for a picture's forward
    pass, then back to whatever mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def first_layer(model: nn.Module) -> nn.Module | None:
    """The first fully-connected or convolutional layer: where the input meets learned weights."""
    return next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)


@torch.no_grad()
def model_pictures(
    model: nn.Module,
    inputs: torch.Tensor,
    *context: torch.Tensor,
    class_names: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """What the first layer learned, for the linear classifier, MLPs, CNNs and template matching:

    - weights that see the whole image (a linear or MLP first layer, class templates): each
      unit's weights reshaped to the image — the learned templates, named by class when each
      is one class's;
    - convolution filters, and the maps they produce on four fixed images (one row per image).
    """
    if inputs.dim() != 4:  # not images (2-D points): the decision boundary shows more
        return {}
    image_shape = inputs.shape[1:]
    templates = getattr(model, "templates", None)  # template matching's: one per class
    one_per_class = True
    layer = first_layer(model)
    sees_whole_image = isinstance(layer, nn.Linear) and layer.in_features >= image_shape.numel()
    if templates is None and sees_whole_image:
        templates = layer.weight  # (units, in_features)
        one_per_class = count_layers(model) == 1  # the linear classifier: a row of W per class
    if isinstance(templates, torch.Tensor):
        return {"templates": templates_picture(templates, image_shape, class_names, one_per_class)}
    if not isinstance(layer, nn.Conv2d):
        return {}
    return conv_pictures(model, layer, inputs, context)


def count_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())


def templates_picture(
    templates: torch.Tensor,
    image_shape: torch.Size,
    class_names: list[str] | None,
    one_per_class: bool,
) -> torch.Tensor:
    """Each unit's weights as an image, captioned with its class (or its number)."""
    # Inputs beyond the image (an inpainting mask channel, say) are left out of the picture.
    shown = templates[:MAX_TEMPLATES, : image_shape.numel()].reshape(-1, *image_shape)
    captions, title = template_captions(len(templates), class_names, one_per_class)
    body = captioned(stretch(shown[:, :3]), captions[: len(shown)], columns=10)
    return titled(body, title, "bright: large weight, dark: small (each scaled on its own)")


def template_captions(
    count: int, class_names: list[str] | None, one_per_class: bool
) -> tuple[list[str], str]:
    """Each template's caption, and the picture's title: class names when each template is one
    class's, else unit numbers."""
    if one_per_class and class_names is not None and len(class_names) == count:
        return list(class_names), f"what each class's score looks for: its {count} templates"
    shown = min(count, MAX_TEMPLATES)
    title = f"first-layer weights of {shown} of {count} units, each as an image"
    return [f"unit {unit}" for unit in range(count)], title


def conv_pictures(
    model: nn.Module, layer: nn.Conv2d, inputs: torch.Tensor, context: tuple[torch.Tensor, ...]
) -> dict[str, torch.Tensor]:
    """The first convolution's filters, and its output maps of four fixed test images."""
    in_colour = layer.in_channels >= 3
    filters = layer.weight[:, :3] if in_colour else layer.weight[:, :1]  # RGB in colour
    maps: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: maps.append(output))
    try:
        with evaluation_mode(model):
            model(inputs[:4], *(c[:4] for c in context))
    finally:
        handle.remove()
    activations = maps[0][:, :MAX_MAPS]  # (4, ≤16, H, W): the first maps of each image
    one_per_tile = stretch(activations.flatten(0, 1)[:, None])  # (4 · maps, 1, H, W)
    count, size = layer.out_channels, "×".join(map(str, layer.kernel_size))
    return {
        "filters": titled(
            grid(stretch(filters), columns=16, min_size=48),
            f"first-layer filters: {count}, each {size}",
            "bright: large weight, dark: small (each scaled on its own)",
        ),
        "activations": titled(
            grid(one_per_tile, columns=activations.shape[1]),
            f"first-layer maps of {len(activations)} test images (a row each), "
            f"{activations.shape[1]} of {count} channels",
            "bright: strong response (each map scaled on its own)",
        ),
    }
