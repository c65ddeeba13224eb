"""A new image (a photo, a drawing, a scan) made into the input a trained model expects, as the
checkpoint's `preprocessing` says: digits and clothes redrawn as MNIST and Fashion-MNIST drew
theirs, an image-folder model's input resized and converted as its folder's images were.

    image, found = prepare_input(Path("digit.png"), checkpoint["preprocessing"])  # predict
"""

from __future__ import annotations

import os
import stat
from functools import partial
from pathlib import Path

import torch

from dlcourse.data.idx_files import MEAN, STD
from dlcourse.data.image_decoding import read_image
from dlcourse.infrastructure.checkpoint import Preprocessing
from dlcourse.infrastructure.errors import UserError

# Checkpoints from before dlcourse stored how its inputs were made were all MNIST models.
MNIST_PREPROCESSING = {"kind": Preprocessing.DIGIT, "mean": [MEAN], "std": [STD]}


def prepare_input(path: Path, preprocessing: dict) -> tuple[torch.Tensor, bool]:
    """An image file → the input the checkpoint's model was trained on (C, H, W), normalised as
    its dataset was, and whether it holds something to classify at all (else the prediction means
    nothing). Digits and clothes are redrawn as MNIST and Fashion-MNIST drew theirs; a model
    trained on an image folder gets the image resized and converted as the folder's were."""
    mean, std = (torch.tensor(preprocessing[k]).view(-1, 1, 1) for k in ("mean", "std"))
    kind = preprocessing["kind"]
    if kind == Preprocessing.IMAGE:
        mode = "L" if preprocessing["channels"] == 1 else "RGB"
        fit = preprocessing.get("resize", "squash")  # a run from before `resize` squashed
        image = read_image(checked(path), mode, preprocessing["image_size"], fit=fit)
        return (image - mean) / std, bool(image.std() > 0.01)
    image = read_image(checked(path), "L", None)  # transparent pixels are white paper
    image, found = fashion_like(image) if kind == Preprocessing.FASHION else mnist_like(image)
    return (image - mean) / std, found


def read_digit(path: Path) -> tuple[torch.Tensor, bool]:
    """Any image → the (1, 28, 28) input an MNIST model expects; see `prepare_input`."""
    return prepare_input(path, MNIST_PREPROCESSING)


def fashion_like(image: torch.Tensor, size: int = 28) -> tuple[torch.Tensor, bool]:
    """As Fashion-MNIST made its images (Xiao et al. 2017): the item on a dark background,
    trimmed to its bounding box, its longer side resized to 28 (aspect ratio kept), centred in
    the 28×28 field; its brightness kept (items are not all white). Returns the image in [0, 1]
    and whether an item stood out from the background."""
    background = image[0, [0, 0, -1, -1], [0, -1, 0, -1]].median()  # the corners: items reach
    # the edges, rarely the corners (Fashion-MNIST trimmed to "the color of the corner pixels")
    if background > 0.5:  # a product photo's white background: the dataset's is black
        image, background = 1 - image, 1 - background
    image = (image - background).clamp_min(0)
    rows, columns = torch.nonzero(image[0] > 0.5 / 255, as_tuple=True)  # any ink
    if image.max() < 0.1 or not len(rows):
        return torch.zeros(1, size, size), False
    item = image[:, rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    scale = size / max(item.shape[1:])
    height, width = (max(1, round(side * scale)) for side in item.shape[1:])
    resize = partial(torch.nn.functional.interpolate, mode="bilinear", antialias=True)
    item = resize(item[None], size=(height, width))[0].clamp(0, 1)  # (1, height, width)
    top, left = (size - height + 1) // 2, (size - width + 1) // 2  # an odd margin: more on top
    canvas = torch.zeros(1, size, size)
    canvas[:, top : top + height, left : left + width] = item
    return canvas, True


def mnist_like(image: torch.Tensor, size: int = 28, box: int = 20) -> tuple[torch.Tensor, bool]:
    """As MNIST made its images: a light digit on a dark background, scaled to fit a 20×20 box
    (aspect ratio kept), then placed so that its centre of mass is the centre of the 28×28
    field. Returns the image in [0, 1] and whether any ink stood out from the background."""
    if image.mean() > 0.5:  # a dark digit on light paper: MNIST has it the other way round
        image = 1 - image
    image = (image - image.min()).clamp_min(0)  # the background at 0
    if image.max() < 0.2:  # no ink: a blank or nearly uniform page
        return torch.zeros(1, size, size), False
    rows, columns = torch.nonzero(image[0] > 0.1 * image.max(), as_tuple=True)
    ink = image[:, rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    ink = ink / ink.max()
    scale = box / max(ink.shape[1:])
    height, width = (max(1, round(side * scale)) for side in ink.shape[1:])
    resize = partial(torch.nn.functional.interpolate, mode="bilinear", antialias=True)
    digit = resize(ink[None], size=(height, width))[0].clamp(0, 1)  # (1, height, width)
    rows, columns = torch.arange(height).float(), torch.arange(width).float()
    mass = digit[0].sum().clamp_min(1e-6)
    centre_row = (digit[0].sum(dim=1) * rows).sum() / mass
    centre_column = (digit[0].sum(dim=0) * columns).sum() / mass
    top = min(max(round(size / 2 - centre_row.item()), 0), size - height)
    left = min(max(round(size / 2 - centre_column.item()), 0), size - width)
    canvas = torch.zeros(1, size, size)
    canvas[:, top : top + height, left : left + width] = digit
    return canvas, True


def checked(path: Path) -> Path:
    """`path`, once it is known to be an image file PIL reads in full."""
    from PIL import Image

    regular_file(path)
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises several types for unreadable files
        raise UserError(f"cannot read image {path}: {error}") from None
    return path


def regular_file(path: Path) -> None:
    """Refuse anything but a regular file before opening it: reading a FIFO waits forever for
    a writer, a device may never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise UserError(f"cannot read image {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise UserError(f"cannot read image {path}: it is {kind}; name an image file")
