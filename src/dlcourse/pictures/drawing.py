"""What every picture is drawn with: tiles on a grid, a legible font, titles and captions.

A picture is a tensor (3, H, W) in [0, 1], for TensorBoard and PNG files alike. Drawn with torch
and PIL alone: torchvision and matplotlib cost seconds to import, and pictures are drawn at
every evaluation.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.nn import functional as F

from dlcourse.infrastructure.files import to_pil

TILE = 84  # a 28-pixel image is drawn 3× (nearest neighbour): legible at the picture's own size
TEXT = 14  # the font's size in pixels, titles and captions alike
LINE = TEXT + 4  # one line of text, with its spacing
GREY = 0.5  # the background between tiles
BODY_TOP = 6 + 2 * LINE  # where a picture starts below its title and note (`titled`)


@lru_cache(maxsize=8)
def font(size: int = TEXT) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, which has the letters of class names in most scripts (Latin with its accents,
    Greek, Cyrillic, ...): the copy matplotlib ships, so every machine draws the same (Pillow's
    own font draws most of them as boxes)."""
    # Found without importing matplotlib (0.08 s at every run's start): its package folder.
    package = importlib.util.find_spec("matplotlib")
    folders = package.submodule_search_locations if package else None
    bundled = Path(folders[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf" if folders else ""
    for name in (str(bundled), "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


@lru_cache(maxsize=4096)  # the same class names and numbers are measured at every evaluation
def text_width(text: str, size: int = TEXT) -> int:
    return max((int(font(size).getlength(line)) for line in text.split("\n")), default=0)


def stretch(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile's values mapped to [0, 1] on its own (weights and activations have any scale)."""
    flat = tiles.flatten(start_dim=1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scale = (high - low).clamp_min(1e-12)
    return ((flat - low[:, None]) / scale[:, None]).view_as(tiles)


def enlarge(tiles: torch.Tensor, min_size: int = TILE) -> torch.Tensor:
    """(N, C, h, w) → RGB tiles at least `min_size` pixels wide, by a whole factor (nearest
    neighbour, so a 5×5 filter shows 5×5 cells and a pixel stays a square)."""
    tiles = tiles.detach().float().cpu()
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    factor = max(1, -(-min_size // tiles.shape[-1]))
    return F.interpolate(tiles, scale_factor=factor, mode="nearest") if factor > 1 else tiles


def grid(tiles: torch.Tensor, columns: int, min_size: int = TILE, padding: int = 2) -> torch.Tensor:
    """(N, C, h, w) tiles in [0, 1] → one (3, H, W) image, `columns` tiles a row, on grey."""
    tiles = enlarge(tiles, min_size)
    count, _, height, width = tiles.shape
    rows, columns = -(-count // columns), min(columns, count)
    image = torch.full(
        (3, rows * (height + padding) + padding, columns * (width + padding) + padding), GREY
    )
    for index, tile in enumerate(tiles):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        image[:, top : top + height, left : left + width] = tile
    return image


def from_pil(picture: Image.Image) -> torch.Tensor:
    array = np.asarray(picture.convert("RGB")).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def titled(body: torch.Tensor | Image.Image, title: str, note: str = "") -> torch.Tensor:
    """`body` under a white band holding its title and, in grey, a note on how to read it."""
    body = body if isinstance(body, Image.Image) else to_pil(body)
    lines = [line for line in (title, note) if line]
    width = max(body.width, *(text_width(line) + 12 for line in lines))
    top = BODY_TOP - LINE * (2 - len(lines))
    picture = Image.new("RGB", (width, top + body.height), "white")
    picture.paste(body, (0, top))
    draw = ImageDraw.Draw(picture)
    draw.text((6, 4), title, fill="black", font=font())
    if note:
        draw.text((6, 4 + LINE), note, fill=(90, 90, 90), font=font())
    return from_pil(picture)


def captioned(
    tiles: torch.Tensor, captions: list[str], columns: int, headers: list[str] | None = None
) -> Image.Image:
    """Tiles (N, C, h, w) in [0, 1], enlarged, each with its caption (one or more lines) below,
    `columns` a row; `headers` name the columns above the first row."""
    tiles = enlarge(tiles)
    height, width = tiles.shape[-2:]
    cell = max([width, *(text_width(c) for c in captions + (headers or []))]) + 8
    caption_lines = max((c.count("\n") + 1 for c in captions), default=0)
    row_height = height + (LINE * caption_lines + 6 if caption_lines else 6)
    top = LINE + 4 if headers else 0
    rows, columns = -(-len(tiles) // columns), min(columns, len(tiles))
    canvas = np.full((top + rows * row_height + 4, columns * cell + 4, 3), 255, dtype=np.uint8)
    # All tiles to 8-bit pixels at once (one by one, the conversion was most of the drawing).
    pixels = (tiles.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    corners = [
        (4 + (index % columns) * cell, top + 4 + (index // columns) * row_height)
        for index in range(len(tiles))
    ]
    for (left, row_top), tile in zip(corners, pixels):
        canvas[row_top : row_top + height, left : left + width] = tile
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for column, header in enumerate(headers or []):
        draw.text((4 + column * cell, 4), header, fill="black", font=font())
    for (left, row_top), caption in zip(corners, captions):
        position = (left, row_top + height + 2)
        draw.multiline_text(position, caption, fill="black", font=font(), spacing=4)
    return picture
