"""Image files decoded as tensors, whatever PIL reads: grayscale or RGB, any bit depth,
transparency on white paper, resized when asked: squashed to the size, or its aspect kept
(`fit`: center_crop, pad)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FITS = ("squash", "pad", "center_crop")  # how an image of another shape is made the size


def read_image(
    path: Path,
    mode: str,
    size: int | tuple[int, int] | None,
    resample: str = "bilinear",
    fit: str = "squash",
) -> torch.Tensor:
    """An image file as a float tensor (C, H, W) in [0, 1]; see `decode_image`."""
    return decode_image(path, mode, size, resample, fit).float().div_(255)


def decode_image(
    path: Path,
    mode: str,
    size: int | tuple[int, int] | None,
    resample: str = "bilinear",
    fit: str = "squash",
) -> torch.Tensor:
    """An image file as a uint8 tensor (C, H, W); mode "L" (grayscale) or "RGB"; `size`: a side,
    or (height, width), to resize to (PIL's resampling, antialiased when shrinking): `fit`
    squash (stretched to it), center_crop (scaled to cover it, the middle kept: no distortion) or
    pad (scaled to fit in it, the rest black: nothing cut off).
    Transparent pixels become white (paper), not the black their colour values often hold;
    16- and 32-bit grayscale is scaled by its bit depth (see `to_8_bits`)."""
    import numpy
    from PIL import Image

    with Image.open(path) as image:
        image = to_8_bits(image)
        if "A" in image.getbands() or "transparency" in image.info:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        image = image.convert(mode)
        height, width = (
            (size, size) if isinstance(size, int) else size or (image.height, image.width)
        )
        if image.size != (width, height):
            image = fitted(image, (width, height), fit, getattr(Image.Resampling, resample.upper()))
        pixels = torch.from_numpy(numpy.array(image, dtype=numpy.uint8))  # (H, W) or (H, W, C)
    return pixels.view(height, width, -1).permute(2, 0, 1).contiguous()  # (C, H, W)


def fitted(image: Any, size: tuple[int, int], fit: str, resample: Any) -> Any:
    """A PIL image made `size` (width, height) as `fit` says (see `decode_image`)."""
    from PIL import ImageOps

    if fit == "center_crop":
        return ImageOps.fit(image, size, resample)
    if fit == "pad":
        return ImageOps.pad(image, size, resample, color=0)
    return image.resize(size, resample)


def to_8_bits(image: Any) -> Any:
    """A 16- or 32-bit grayscale PIL image (modes "I;16", "I;16B", ... and "I": 16-bit PNG,
    TIFF, PGM) as 8-bit "L", its values scaled by the bit depth. PIL's own convert clips every
    value above 255, which makes such an image almost all white. Mode "I" does not say its
    depth: values up to 65535 are taken as 16 bits (what PNG and most TIFFs hold), else 32.
    Other images come back as they are."""
    import numpy
    from PIL import Image

    if not image.mode.startswith("I"):
        return image
    pixels = numpy.asarray(image).astype(numpy.float64)
    sixteen = image.mode.startswith("I;16") or pixels.max(initial=0) <= 65535
    full_scale = 65535 if sixteen else 2**31 - 1  # "I" is signed 32-bit
    scaled = (numpy.clip(pixels, 0, full_scale) * (255 / full_scale)).round().astype(numpy.uint8)
    transparent = image.info.get("transparency")
    if type(transparent) is int:  # one gray value marks transparent pixels: white paper
        scaled[pixels == transparent] = 255
    return Image.fromarray(scaled)
