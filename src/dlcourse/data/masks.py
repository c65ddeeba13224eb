"""Inpainting masks, made for a whole batch at once on the device: 1 marks a hole, 0 a kept pixel.

Every generator returns a float tensor (count, 1, height, width) and draws only from the
generator it is given, so a seed fixes its masks on any device.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from dlcourse.infrastructure.errors import UserError

SIDES = ("top", "bottom", "left", "right")


def rectangles(
    count: int,
    height: int,
    width: int,
    generator: torch.Generator,
    number: int = 2,
    min_size: int = 6,
    max_size: int = 12,
) -> torch.Tensor:
    """`number` axis-aligned rectangles per image, each side between min_size and max_size."""
    if not 1 <= min_size <= max_size <= min(height, width):
        raise UserError(
            f"mask sizes need 1 <= min_size <= max_size <= {min(height, width)}; got {min_size}, "
            f"{max_size}"
        )
    device = generator.device
    shape = (count, number, 1, 1)
    heights = torch.randint(min_size, max_size + 1, shape, generator=generator, device=device)
    widths = torch.randint(min_size, max_size + 1, shape, generator=generator, device=device)
    # A uniform position among those that keep the whole rectangle inside the image.
    tops = (torch.rand(shape, generator=generator, device=device) * (height - heights + 1)).long()
    lefts = (torch.rand(shape, generator=generator, device=device) * (width - widths + 1)).long()
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    columns = torch.arange(width, device=device).view(1, 1, 1, width)
    inside = (
        (rows >= tops) & (rows < tops + heights) & (columns >= lefts) & (columns < lefts + widths)
    )
    return inside.any(dim=1, keepdim=True).float()  # (count, 1, height, width)


def pixels(
    count: int, height: int, width: int, generator: torch.Generator, rate: float = 0.5
) -> torch.Tensor:
    """Each pixel is a hole with probability `rate`."""
    if not 0 < rate < 1:
        raise UserError(f"a pixel-dropout mask needs 0 < rate < 1; got rate={rate}")
    noise = torch.rand((count, 1, height, width), generator=generator, device=generator.device)
    return (noise < rate).float()


def half(
    count: int, height: int, width: int, generator: torch.Generator, side: str = "random"
) -> torch.Tensor:
    """One half of the image: the `side` given, or a random side per image."""
    if side not in (*SIDES, "random"):
        raise UserError(
            f"a half mask's side must be one of {', '.join(SIDES)} or random; got {side!r}"
        )
    templates = torch.zeros((len(SIDES), 1, height, width), device=generator.device)
    templates[0, :, : height // 2] = 1
    templates[1, :, height // 2 :] = 1
    templates[2, :, :, : width // 2] = 1
    templates[3, :, :, width // 2 :] = 1
    if side == "random":
        return templates[
            torch.randint(len(SIDES), (count,), generator=generator, device=generator.device)
        ]
    return templates[SIDES.index(side)].expand(count, -1, -1, -1).clone()


def center_box(
    count: int, height: int, width: int, generator: torch.Generator, size: int = 14
) -> torch.Tensor:
    """The same size × size box in the middle of every image."""
    if not 1 <= size <= min(height, width):
        raise UserError(f"a centre box needs 1 <= size <= {min(height, width)}; got size={size}")
    mask = torch.zeros((1, 1, height, width), device=generator.device)
    top, left = (height - size) // 2, (width - size) // 2
    mask[..., top : top + size, left : left + size] = 1
    return mask.expand(count, -1, -1, -1).clone()


MASKS = {"rectangles": rectangles, "pixels": pixels, "half": half, "center_box": center_box}


def make_masks(
    spec: dict[str, Any], count: int, height: int, width: int, seed: int, device: torch.device
) -> torch.Tensor:
    """Masks from a config such as {kind: rectangles, number: 2, min_size: 6, max_size: 12}."""
    settings = dict(spec)
    kind = settings.pop("kind", None)
    if kind not in MASKS:
        raise UserError(f"mask kind {kind!r} is not known; choose mask={'|'.join(MASKS)}")
    generator = torch.Generator(device=device).manual_seed(seed)
    try:
        return MASKS[kind](count, height, width, generator, **settings)
    except TypeError as error:
        raise UserError(
            f"bad settings for a {kind} mask ({error}); its settings: configs/mask/{kind}.yaml"
        ) from None


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """A seed of its own for each named random stream (val masks, epoch 3's masks, ...)."""
    digest = hashlib.sha256(f"{seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
