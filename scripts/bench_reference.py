"""pytorch/examples' MNIST recipe: dlcourse's trainer against a loop written like the reference.

    DLCOURSE_DATA_DIR=../shared/data python scripts/bench_reference.py [--epochs 2] [--repeats 3]
    [--first-seed 1]
    python scripts/bench_reference.py --variants "" "trainer.precision=bf16
    trainer.channels_last=true"

The reference (github.com/pytorch/examples, mnist/main.py): conv 32 → conv 64 → max-pool →
dropout → fc 128 → dropout → fc 10, batch 64, Adadelta lr 1.0, StepLR gamma 0.7, a torchvision
DataLoader with ToTensor + Normalize, and a test pass after every epoch. Ours is
`experiment=examples_mnist` through the usual composition function. Both run in this process,
interleaved, with the same thread count and a new seed each round (theirs seeds torch, ours
`seed=`); seconds per epoch count training and each epoch's
evaluation (ours: validation every epoch and the test once; theirs: the test every epoch), not
the process start or reading the data. The reference trains on all 60,000 training images and
measures the test split as it goes; ours holds 1,000 out for validation. Not a test: it trains
for minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
from bench import DATA_DIR, machine_line, write_section  # scripts/bench.py, beside this file
from hydra import compose, initialize_config_dir
from torch import nn
from torch.nn import functional as F

from dlcourse.infrastructure.config import config_dir, register_resolvers
from dlcourse.run import train


class Net(nn.Module):
    """The reference network, as written there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def reference_run(
    epochs: int,
    seed: int,
    device: str = "cpu",
    data_dir: str = DATA_DIR,
    limit_batches: int | None = None,
) -> tuple[float, float]:
    """The reference's main(): returns (seconds per epoch, final test accuracy). On CUDA it
    does what the reference does there: one loader worker, pinned memory, `.to(device)`."""
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    cuda = {"num_workers": 1, "pin_memory": True} if device == "cuda" else {}
    train_loader = torch.utils.data.DataLoader(
        datasets.MNIST(data_dir, train=True, transform=transform),
        batch_size=64, shuffle=True, **cuda,
    )  # fmt: skip
    test_loader = torch.utils.data.DataLoader(
        datasets.MNIST(data_dir, train=False, transform=transform), batch_size=1000, **cuda
    )
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            if batch_idx == limit_batches:  # a dry run's few batches
                break
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if batch_idx % 10 == 0:  # the reference's log_interval
                loss.item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                correct += model(data).argmax(dim=1).eq(target).sum().item()
        scheduler.step()
    return (time.perf_counter() - start) / epochs, correct / len(test_loader.dataset)


def dlcourse_run(
    epochs: int, seed: int, overrides: list[str], data_dir: str = DATA_DIR
) -> tuple[float, float]:
    """experiment=examples_mnist through `train`: returns (seconds per epoch, test accuracy)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=examples_mnist",
                f"trainer.epochs={epochs}",
                "trainer.progress_bar=false",
                f"paths.data_dir={data_dir}",
                f"seed={seed}",
                *overrides,
            ],
        )
    metrics = train(cfg, tempfile.mkdtemp(prefix="dlcourse-reference-"))
    return metrics["train_seconds"] / epochs, metrics["test/acc"]


REFERENCE = "pytorch/examples loop (DataLoader)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=1,
        help="seeds first-seed, first-seed + 1, ... (one per round)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[""],
        help='our runs, each a string of overrides ("" = the preset as shipped)',
    )
    args = parser.parse_args()
    register_resolvers()
    runs = {REFERENCE: lambda seed: reference_run(args.epochs, seed)}
    for variant in args.variants:
        name = "dlcourse `experiment=examples_mnist`" + "".join(f" `{o}`" for o in variant.split())
        runs[name] = lambda seed, overrides=variant.split(): dlcourse_run(
            args.epochs, seed, overrides
        )
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    seeds = range(args.first_seed, args.first_seed + args.repeats)
    for seed in seeds:  # interleaved: theirs, ours, theirs, ours; a new seed each round
        for name, run in runs.items():
            results[name].append(run(seed))
            print(name, results[name][-1], flush=True)
    lines = [
        machine_line(args.repeats),
        f"Command: `DLCOURSE_DATA_DIR=../shared/data python scripts/bench_reference.py --epochs "
        f"{args.epochs} --repeats {args.repeats} --first-seed {args.first_seed} --variants "
        + " ".join(f'"{v}"' for v in args.variants)
        + "`",
        "",
        *table(results, args.epochs, seeds),
    ]
    print("\n".join(lines))
    write_section(
        f"reference-seeds-{seeds[0]}-{seeds[-1]}", lines + [""]
    )  # each set of seeds keeps its table
    return 0


def table(results: dict[str, list[tuple[float, float]]], epochs: int, seeds: range) -> list[str]:
    """Seconds per epoch and test accuracy of each variant, against the reference's."""
    lines = [
        f"| variant | min s / epoch | median s / epoch | ratio (min / reference min) | "
        f"ratio in each round | test/acc after {epochs} epochs, seeds {seeds[0]}–{seeds[-1]} | "
        "mean test/acc |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    reference = [seconds for seconds, _ in results[REFERENCE]]
    for name, values in results.items():
        seconds = [s for s, _ in values]
        # Each round's own pair, so that a busy minute on the machine weighs on both sides.
        rounds = ", ".join(f"{ours / theirs:.3f}" for ours, theirs in zip(seconds, reference))
        accuracies = ", ".join(f"{a:.2%}" for _, a in values)
        mean = statistics.mean(a for _, a in values)
        lines.append(
            f"| {name} | {min(seconds):.2f} | {statistics.median(seconds):.2f} | "
            f"{min(seconds) / min(reference):.3f} | {rounds} | {accuracies} | {mean:.2%} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
