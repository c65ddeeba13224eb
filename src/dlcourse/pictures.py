"""Pictures of what a model learned and does: templates, filters, activation maps, confusion
matrices, mistakes and 2-D decision boundaries. Each is an image (3, H, W) in [0, 1], for
TensorBoard and PNG files.

Drawn with torch and PIL alone: torchvision and matplotlib cost seconds to import, and these
run at every evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F

from dlcourse.infrastructure.files import to_pil

MAX_TEMPLATES = 100  # hidden units shown for a wide first layer
# One colour per class (matplotlib's tab10), for decision boundaries.
PALETTE = torch.tensor(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]]
) / 255  # fmt: skip


def stretch(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile's values mapped to [0, 1] on its own (weights and activations have any scale)."""
    flat = tiles.flatten(start_dim=1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scale = (high - low).clamp_min(1e-12)
    return ((flat - low[:, None]) / scale[:, None]).view_as(tiles)


def grid(tiles: torch.Tensor, columns: int, min_size: int = 28, padding: int = 2) -> torch.Tensor:
    """(N, C, h, w) tiles in [0, 1] → one (3, H, W) image, `columns` tiles a row, on grey.

    Tiles smaller than `min_size` are enlarged (nearest neighbour, so a 5×5 filter shows 5×5
    cells)."""
    tiles = tiles.detach().float().cpu()
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    factor = max(1, -(-min_size // tiles.shape[-1]))
    tiles = F.interpolate(tiles, scale_factor=factor, mode="nearest") if factor > 1 else tiles
    count, _, height, width = tiles.shape
    rows, columns = -(-count // columns), min(columns, count)
    image = torch.full(
        (3, rows * (height + padding) + padding, columns * (width + padding) + padding), 0.5
    )
    for index, tile in enumerate(tiles):
        top, left = (
            padding + (index // columns) * (height + padding),
            padding + (index % columns) * (width + padding),
        )
        image[:, top : top + height, left : left + width] = tile
    return image


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
    model: nn.Module, inputs: torch.Tensor, *context: torch.Tensor
) -> dict[str, torch.Tensor]:
    """What the first layer learned, for the linear classifier, MLPs, CNNs and template matching:

    - weights that see the whole image (a linear or MLP first layer, class templates): each
      unit's weights reshaped to the image — the learned templates;
    - convolution filters, and the maps they produce on four fixed images (one row per image).
    """
    if inputs.dim() != 4:  # not images (2-D points): the decision boundary shows more
        return {}
    image_shape = inputs.shape[1:]
    templates = getattr(model, "templates", None)
    layer = first_layer(model)
    sees_whole_image = isinstance(layer, nn.Linear) and layer.in_features >= image_shape.numel()
    if templates is None and sees_whole_image:
        templates = layer.weight  # (units, in_features)
    if isinstance(templates, torch.Tensor):
        # Inputs beyond the image (an inpainting mask channel, say) are left out of the picture.
        images = templates[:MAX_TEMPLATES, : image_shape.numel()].reshape(-1, *image_shape)
        return {"templates": grid(stretch(images[:, :3]), columns=10)}
    if not isinstance(layer, nn.Conv2d):
        return {}
    filters = (
        layer.weight[:, :3] if layer.in_channels >= 3 else layer.weight[:, :1]
    )  # RGB in colour
    maps: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: maps.append(output))
    try:
        with evaluation_mode(model):
            model(inputs[:4], *(c[:4] for c in context))
    finally:
        handle.remove()
    activations = maps[0][:, :16]  # (4, ≤16, H, W): the first 16 maps of each image
    one_per_tile = stretch(activations.flatten(0, 1)[:, None])  # (4 · maps, 1, H, W)
    return {
        "filters": grid(stretch(filters), columns=16, min_size=24),
        "activations": grid(one_per_tile, columns=activations.shape[1]),
    }


@torch.no_grad()
def decision_boundary(
    model: nn.Module, points: torch.Tensor, labels: torch.Tensor, size: int = 256
) -> torch.Tensor:
    """The plane around 2-D `points` coloured pale by the class the model predicts there, and the
    points on top in their true class's colour: a point on the wrong colour is a mistake."""
    low, high = points.min(dim=0).values, points.max(dim=0).values
    margin = 0.1 * (high - low)
    low, high = low - margin, high + margin
    xs = torch.linspace(low[0].item(), high[0].item(), size, device=points.device)
    ys = torch.linspace(high[1].item(), low[1].item(), size, device=points.device)  # y up
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (size, size) each
    plane = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)  # (size², 2)
    with evaluation_mode(model):
        predicted = model(plane.to(points.dtype)).argmax(dim=1).reshape(size, size).cpu()
    image = 0.35 * PALETTE[predicted % len(PALETTE)] + 0.65  # (size, size, 3), pale
    scaled = (points.float().cpu() - low.cpu()) / (high - low).cpu() * (size - 1)
    rows, columns = (size - 1 - scaled[:, 1]).round().long(), scaled[:, 0].round().long()
    colours = 0.8 * PALETTE[labels.cpu() % len(PALETTE)]  # (N, 3), darker than the regions
    for row_offset in (-1, 0, 1):  # each point a 3×3 dot
        for column_offset in (-1, 0, 1):
            row = (rows + row_offset).clamp(0, size - 1)
            column = (columns + column_offset).clamp(0, size - 1)
            image[row, column] = colours
    return image.permute(2, 0, 1)  # (3, size, size)


def from_pil(picture: Image.Image) -> torch.Tensor:
    return (
        torch.from_numpy(np.asarray(picture.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    )


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """counts[t, p]: how many images of class t were predicted as p."""
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).view(
        num_classes, num_classes
    )


def confusion_matrix_image(
    counts: torch.Tensor, class_names: list[str] | None = None, cell: int = 26
) -> torch.Tensor:
    """Rows: true class; columns: predicted class; shade: the row's fraction; each cell's count.
    Columns are headed by class number, rows by number and name (when the name is not the
    number, as for digits)."""
    num_classes = counts.shape[0]
    names = [
        str(i) if not class_names or class_names[i] == str(i) else f"{i} {class_names[i]}"
        for i in range(num_classes)
    ]
    fractions = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    top, left = cell, max(cell, 8 + 6 * max(len(name) for name in names))  # ≈6 pixels a letter
    picture = Image.new("RGB", (left + num_classes * cell, top + num_classes * cell), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((2, 6), "t\\p", fill="grey")  # true down the side, predicted along the top
    for index in range(num_classes):
        draw.text((left + index * cell + cell // 3, 6), str(index), fill="black")
        draw.text((4, top + index * cell + cell // 3), names[index], fill="black")
    for true in range(num_classes):
        for predicted in range(num_classes):
            shade = int(255 * (1 - fractions[true, predicted].item()))
            box = (
                left + predicted * cell,
                top + true * cell,
                left + (predicted + 1) * cell,
                top + (true + 1) * cell,
            )
            draw.rectangle(box, fill=(shade, shade, 255), outline=(200, 200, 200))
            draw.text(
                (box[0] + 3, box[1] + 7),
                str(int(counts[true, predicted])),
                fill="black" if shade > 120 else "white",
            )
    return from_pil(picture)


def labelled_grid(
    images: torch.Tensor, labels: list[str], columns: int = 8, title: str = ""
) -> torch.Tensor:
    """Images (N, C, h, w) each with a caption below it (one or more lines), and a title line on
    top."""
    tiles = F.interpolate(stretch(images.float().cpu()), scale_factor=2, mode="nearest")
    gap = 14 * max((label.count("\n") + 1 for label in labels), default=1)  # room for captions
    body = to_pil(grid(tiles, columns=columns, padding=gap))
    picture = Image.new("RGB", (body.width, body.height + 14), "white")
    picture.paste(body, (0, 14))
    draw = ImageDraw.Draw(picture)
    draw.text((2, 1), title, fill="black")
    height, width = tiles.shape[-2:]
    for index, label in enumerate(labels):
        top, left = (
            14 + gap + (index // columns) * (height + gap),
            gap + (index % columns) * (width + gap),
        )
        draw.multiline_text((left, top + height), label, fill="black", spacing=2)
    return from_pil(picture)


def curves_image(
    history: list[dict[str, float]], names: list[str], size: int = 320
) -> torch.Tensor:
    """One panel per metric name (`loss`, `acc`, ...): its train/ and val/ values against the
    epoch, train in blue, val in orange. `history`: one dict of epoch metrics per epoch."""
    panels = [curve_panel(history, name, size) for name in names]
    canvas = Image.new("RGB", (size * len(panels), size), "white")
    for index, panel in enumerate(panels):
        canvas.paste(panel, (index * size, 0))
    return from_pil(canvas)


def curve_panel(history: list[dict[str, float]], name: str, size: int) -> Image.Image:
    panel = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(panel)
    left, top, right, bottom = 44, 24, size - 10, size - 30
    draw.rectangle((left, top, right, bottom), outline="black")
    series = {
        split: [
            (row["epoch"], row[f"{split}/{name}"]) for row in history if f"{split}/{name}" in row
        ]
        for split in ("train", "val")
    }
    values = [value for points in series.values() for _, value in points]
    draw.text((left, 6), f"{name}: train (blue), val (orange)", fill="black")
    if not values:
        return panel
    low, high = min(values), max(values)
    high = high if high > low else low + 1e-9
    last_epoch = max(row["epoch"] for row in history)

    def position(epoch: int, value: float) -> tuple[float, float]:
        x = left + (right - left) * (epoch - 1) / max(last_epoch - 1, 1)
        return x, bottom - (bottom - top) * (value - low) / (high - low)

    for split, colour in (("train", (31, 119, 180)), ("val", (255, 127, 14))):
        points = [position(epoch, value) for epoch, value in series[split]]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    draw.text((2, top), f"{high:.3g}", fill="black")
    draw.text((2, bottom - 10), f"{low:.3g}", fill="black")
    draw.text((left, bottom + 6), "epoch 1", fill="black")
    draw.text((right - 48, bottom + 6), f"epoch {last_epoch}", fill="black")
    return panel
