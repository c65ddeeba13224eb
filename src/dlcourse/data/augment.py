"""Training-image augmentation a batch at a time: torchvision.transforms.v2's augmentations,
each image with its own random draw, as tensor operations on the whole batch (where the images
sit: on the training device when cached). Per image, as v2 applies them, the Python calls would
cost more than a small model's training step.

    v2.RandomResizedCrop(size, scale)  → random_resized_crop: a random area and aspect ratio
    v2.RandomCrop(size, padding=p)     → padded_crop: zero padding, then a random window
    v2.RandomHorizontalFlip()          → horizontal_flip: half of the images mirrored

Each draws its random numbers from the generator given (seeded per batch, so a resumed run draws
the same ones) and works on float images in [0, 1], before normalisation, as torchvision does.
One difference: the resized crop samples bilinearly without antialiasing, where torchvision
antialiases when it shrinks. `Augmentation.transforms` gives the v2 objects themselves, for
comparison (tests/test_images.py checks the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ASPECT_RATIOS = (3 / 4, 4 / 3)  # RandomResizedCrop's default range


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations a training image gets (none by default)."""

    crop_padding: int = 0  # RandomCrop(image_size, padding=crop_padding); 0: off
    horizontal_flip: bool = False  # RandomHorizontalFlip(p=0.5)
    resized_crop_scale: tuple[float, float] | None = None  # RandomResizedCrop(scale=...); None: off

    def __bool__(self) -> bool:
        return bool(self.crop_padding or self.horizontal_flip or self.resized_crop_scale)

    def transforms(self, size: int) -> list:
        """The same augmentations as torchvision.transforms.v2 objects, for one image at a time."""
        from torchvision.transforms import v2

        transforms = []
        if self.resized_crop_scale:
            transforms.append(v2.RandomResizedCrop(size, scale=self.resized_crop_scale))
        if self.crop_padding:
            transforms.append(v2.RandomCrop(size, padding=self.crop_padding))
        if self.horizontal_flip:
            transforms.append(v2.RandomHorizontalFlip())
        return transforms

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A batch (B, C, H, W) in [0, 1], each image augmented with its own random draw."""
        if self.resized_crop_scale:
            images = random_resized_crop(images, self.resized_crop_scale, generator)
        if self.crop_padding:
            images = padded_crop(images, self.crop_padding, generator)
        if self.horizontal_flip:
            images = horizontal_flip(images, generator)
        return images


def uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def padded_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad every side with `padding` zeros, then cut each image's own random H×W window."""
    count, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)  # (B, C, H + 2p, W + 2p)
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator).to(images.device)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator).to(images.device)
    rows = (top[:, None] + torch.arange(height, device=images.device))[:, :, None]  # (B, H, 1)
    columns = (left[:, None] + torch.arange(width, device=images.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(count, device=images.device)[:, None, None]  # (B, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, columns].permute(0, 3, 1, 2)  # (B, C, H, W)


def horizontal_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left to right with probability 1/2."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_resized_crop(
    images: torch.Tensor, scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Each image's own crop, of a random share `scale` of its area and a random aspect ratio in
    [3/4, 4/3] (log-uniform), at a random place, resized back to H×W."""
    count, _, height, width = images.shape
    area = uniform(count, *scale, generator) * height * width
    log_low, log_high = math.log(ASPECT_RATIOS[0]), math.log(ASPECT_RATIOS[1])
    ratio = torch.exp(uniform(count, log_low, log_high, generator))
    crop_width = torch.sqrt(area * ratio).clamp(1, width)  # a crop wider than the image: all of it
    crop_height = torch.sqrt(area / ratio).clamp(1, height)
    left = torch.rand(count, generator=generator) * (width - crop_width)
    top = torch.rand(count, generator=generator) * (height - crop_height)
    # affine_grid maps the output onto [-1, 1] coordinates of the input: scale, then shift.
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = crop_width / width, crop_height / height
    theta[:, 0, 2] = (2 * left + crop_width) / width - 1  # the crop's centre, from −1 to 1
    theta[:, 1, 2] = (2 * top + crop_height) / height - 1
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
