"""A bare PyTorch MNIST training script: the baseline that scripts/bench.py's `outside` rows
time dlcourse-train against, from outside the process (issue #17).

    python scripts/bare_mnist.py --model mlp --epochs 3 --data-dir ../shared/data --out /tmp/bare

What a hand-written script does for the same work, and no more: read the IDX files, normalise,
hold out 5,000 validation images, train with SGD (lr 0.01, momentum 0.9, batch 128), measure
validation loss and accuracy after every epoch, save a checkpoint every epoch, and measure the
test split once at the end. No dlcourse import, so its start-up is torch's alone.

With --gc-like-dlcourse it also treats the garbage collector as dlcourse-train does (off during
start-up, then start-up's objects frozen: see
dlcourse.infrastructure.runtime.finish_startup), so that scripts/bench.py can show how much
of dlcourse-train's lead or lag is that alone.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

if "--gc-like-dlcourse" in sys.argv:
    gc.disable()  # before torch's import, as dlcourse-train does

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


def read_idx(path: Path, offset: int) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8)[offset:].copy())


def load(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw = data_dir / "MNIST" / "raw"
    images = read_idx(raw / f"{split}-images-idx3-ubyte", 16).view(-1, 1, 28, 28)
    labels = read_idx(raw / f"{split}-labels-idx1-ubyte", 8).long()
    return (images.float() / 255 - 0.1307) / 0.3081, labels


@torch.no_grad()
def measure(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(images), 1000):
        outputs = model(images[start : start + 1000])
        loss += F.cross_entropy(outputs, labels[start : start + 1000], reduction="sum").item()
        correct += (outputs.argmax(dim=1) == labels[start : start + 1000]).sum().item()
    return loss / len(images), correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "linear"], default="mlp")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("bare_run"))
    parser.add_argument("--gc-like-dlcourse", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = load(args.data_dir, "train")
    test_images, test_labels = load(args.data_dir, "t10k")
    order = torch.randperm(len(images))
    val, train = order[:5000], order[5000:]
    hidden = [nn.Linear(784, 800), nn.ReLU()] if args.model == "mlp" else []
    model = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(800 if hidden else 784, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if args.gc_like_dlcourse:  # start-up is over
        gc.freeze()
        gc.enable()
    args.out.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        shuffled = train[torch.randperm(len(train))]
        for start in range(0, len(shuffled), 128):
            batch = shuffled[start : start + 128]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_loss, val_acc = measure(model, images[val], labels[val])
        print(f"epoch {epoch}: val/loss {val_loss:.4f} val/acc {val_acc:.4f}", flush=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        torch.save(state, args.out / "last.pt")
    test_loss, test_acc = measure(model, test_images, test_labels)
    print(f"test/loss {test_loss:.4f} test/acc {test_acc:.4f}")
    if args.gc_like_dlcourse:
        gc.freeze()  # the process ends: spare its exit a scan of every object


if __name__ == "__main__":
    main()
