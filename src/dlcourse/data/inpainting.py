"""Inpainting pairs made from MNIST: (masked input, complete target, mask), pixels in [0, 1].

Validation and test masks are drawn once from the seed, so every run with that seed is
measured on the same holes; training masks are drawn afresh each epoch. All of it is made
batch-wise on the training device, like the classification fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from dlcourse.data.batches import Batch, DataSplits, TensorBatches
from dlcourse.data.masks import make_masks, stream_seed
from dlcourse.data.mnist import open_mnist
from dlcourse.tasks import InpaintingTask


class MaskedPairBatches(TensorBatches):
    """Batches of (masked, target, mask) from images and their masks.

    With `draw_masks`, the masks are drawn again for every epoch (training); without, the masks
    given are used every time (validation and test).
    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        fill_value: float = 0.0,
        draw_masks: Callable[[int], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(
            (images, masks if masks is not None else draw_masks(0)), batch_size, shuffle, seed
        )
        self.fill_value = fill_value
        self.draw_masks = draw_masks

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch, start_batch)
        if self.draw_masks is not None:
            self.tensors = (self.tensors[0], self.draw_masks(epoch))

    def __iter__(self) -> Iterator[Batch]:
        for images, masks in super().__iter__():
            masked = torch.lerp(
                images, torch.full_like(images, self.fill_value), masks
            )  # fill the holes
            yield masked, images, masks


def inpainting(
    data_dir: str,
    batch_size: int = 128,
    eval_batch_size: int = 1000,
    val_size: int = 5000,
    train_subset: int | None = None,
    mask: dict[str, Any] | None = None,
    fill_value: float = 0.0,
    download_missing: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataSplits:
    """MNIST digits with holes to fill; the same train / val / test images as `mnist`."""
    mask = dict(mask or {"kind": "rectangles"})  # None: rectangles with their defaults
    device = torch.device(device)
    files = open_mnist(data_dir, val_size, download_missing, seed, train_subset)
    images = files.train.data.to(device).unsqueeze(1).float().div_(255)  # (60000, 1, 28, 28)
    train_images, val_images = images[files.train_indices], images[files.val_indices]
    test_images = files.test.data.to(device).unsqueeze(1).float().div_(255)
    height, width = images.shape[-2:]

    def masks_for(count: int, stream: str, index: int = 0) -> torch.Tensor:
        return make_masks(mask, count, height, width, stream_seed(seed, stream, index), device)

    def train_masks(epoch: int) -> torch.Tensor:  # drawn afresh every epoch
        return masks_for(len(train_images), "train-masks", epoch)

    val_masks = masks_for(val_size, "val-masks")
    test_masks = masks_for(len(test_images), "test-masks")
    fill = {"fill_value": fill_value}
    return DataSplits(
        train=MaskedPairBatches(
            train_images, None, batch_size, True, seed, draw_masks=train_masks, **fill
        ),
        val=MaskedPairBatches(val_images, val_masks, eval_batch_size, False, **fill),
        test=MaskedPairBatches(test_images, test_masks, eval_batch_size, False, **fill),
        task=InpaintingTask(mean_image=train_images.mean(dim=0)),
        input_shape=(1, height, width),
    )
