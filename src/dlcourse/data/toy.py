"""2-D toy data that no straight line separates: why MLPs (issue #15).

    dlcourse-train -m experiment=spirals model=linear,mlp
    dlcourse-train experiment=spirals model.activation=identity   # an MLP that is linear

Each input is a point (x, y); its class is which spiral arm (or which XOR quadrant) it lies on.
The runs draw `decision_boundary.png`: the plane coloured by the predicted class, with the fixed
test points on top. A linear classifier can only cut the plane with straight lines; an MLP with
ReLUs bends its boundary around the arms; the same MLP with `activation=identity` computes
W₃W₂W₁x, a linear map, and draws the linear classifier's straight boundary again.
"""

from __future__ import annotations

from typing import Literal

import torch

from dlcourse.data.batches import DataSplits, TensorBatches
from dlcourse.infrastructure.checkpoint import Preprocessing
from dlcourse.infrastructure.errors import UserError
from dlcourse.tasks import ClassificationTask

# Test points come from their own generator, so the test set is the same whatever the seed.
TEST_SEED = 2**31 - 1


def spiral_points(
    count: int, num_classes: int, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` points on `num_classes` interleaved spiral arms (CS231n's spiral data)."""
    labels = torch.randint(num_classes, (count,), generator=generator)
    radius = torch.rand(count, generator=generator)  # 0 at the centre, 1 at the arm's end
    # Each arm turns through 4 radians from its own start; noise blurs the arms into each other.
    angle = labels * 4.0 + radius * 4.0 + noise * torch.randn(count, generator=generator)
    points = torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=1)
    return points, labels


def xor_points(
    count: int, num_classes: int, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [−1, 1]²: class 1 where x and y have opposite signs (the XOR of their signs)."""
    points = torch.rand(count, 2, generator=generator) * 2 - 1
    jittered = points + noise * torch.randn(count, 2, generator=generator)
    labels = ((jittered[:, 0] > 0) != (jittered[:, 1] > 0)).long()
    return points, labels


def points(
    shape: Literal["spirals", "xor"] = "spirals",
    num_classes: int = 3,
    noise: float = 0.2,
    num_train: int = 3000,
    num_val: int = 600,
    num_test: int = 1000,
    batch_size: int = 64,
    eval_batch_size: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataSplits:
    """Points on `num_classes` spiral arms, or in the square labelled by the XOR of the signs of
    their coordinates (two classes); train and val drawn by `seed`, test always the same."""
    if shape == "xor" and num_classes != 2:
        raise UserError(f"dataset.num_classes={num_classes}: XOR data has 2 classes; set it to 2")
    make, names = {
        "spirals": (spiral_points, [f"arm {i}" for i in range(num_classes)]),
        "xor": (xor_points, ["same sign", "opposite signs"]),
    }[shape]
    generator = torch.Generator().manual_seed(seed)
    train = make(num_train, num_classes, noise, generator)
    val = make(num_val, num_classes, noise, generator)
    test = make(num_test, num_classes, noise, torch.Generator().manual_seed(TEST_SEED))
    on_device = [tuple(t.to(device) for t in split) for split in (train, val, test)]
    return DataSplits(
        train=TensorBatches(on_device[0], batch_size, shuffle=True, seed=seed),
        val=TensorBatches(on_device[1], eval_batch_size, shuffle=False),
        test=TensorBatches(on_device[2], eval_batch_size, shuffle=False),
        task=ClassificationTask(names),
        input_shape=(2,),
        preprocessing={"kind": Preprocessing.POINTS},
    )
