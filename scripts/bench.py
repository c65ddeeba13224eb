"""Side-by-side speed benchmarks: dlcourse against a bare PyTorch loop on the same tensors.

    DLCOURSE_DATA_DIR=../shared/data python scripts/bench.py [--repeats 5] [--only overhead
    outside data logging startup]

Variants run in one process, interleaved (A B A B ...), each repeated; the table gives min and
median seconds per epoch and the ratio of the minima. Not a test: timings on shared machines
are noisy, so only ratios measured side by side mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dlcourse.data.mnist import mnist
from dlcourse.infrastructure.loggers import NullLogger, TensorBoardLogger
from dlcourse.infrastructure.run_files import NullRunFiles
from dlcourse.infrastructure.schema import TrainerSettings
from dlcourse.models import MLP, LinearClassifier
from dlcourse.schedulers import constant
from dlcourse.trainer import Trainer

DATA_DIR = os.environ.get("DLCOURSE_DATA_DIR", "data")
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def time_it(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def compare(variants: dict, repeats: int) -> dict[str, list[float]]:
    """Run each variant once per round, round after round (interleaved); return the timings."""
    for run in variants.values():
        run()  # warm-up: allocator, kernels, lazy imports
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            timings[name].append(time_it(run))
    return timings


def report(
    title: str, timings: dict[str, list[float]], baseline: str, of: str = "min"
) -> list[str]:
    """A table of each variant's min and median seconds, and its ratio to the baseline's (of
    the minima, or of the medians where a goal is stated that way)."""
    lines = [
        f"### {title}",
        "",
        f"| variant | min s | median s | ratio ({of} / baseline {of}) |",
        "| --- | --- | --- | --- |",
    ]
    pick = min if of == "min" else statistics.median
    base = pick(timings[baseline])
    for name, values in timings.items():
        low, median = min(values), statistics.median(values)
        lines.append(f"| {name} | {low:.4f} | {median:.4f} | {pick(values) / base:.3f} |")
    print("\n".join(lines) + "\n", flush=True)
    return lines + [""]


def make_trainer(model: nn.Module, data, logger, log_dir: Path, device: str = "cpu") -> Trainer:
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = len(data.train)
    settings = TrainerSettings(epochs=1, device=device, progress_bar=False)
    return Trainer(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        constant(optimizer, steps, steps),
        data,
        logger,
        settings,
        torch.device(device),
        files=NullRunFiles(log_dir),
        config={},
    )


def bare_loop(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    metrics: bool = False,
):
    """The minimal hand-written epoch: shuffle, slice, forward, backward, step; with `metrics`,
    the training loss and accuracy summed at every step, as a hand-written loop would."""
    model = model.to(images.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch() -> None:
        model.train()
        loss_sum = torch.zeros((), device=images.device)
        correct = torch.zeros((), dtype=torch.long, device=images.device)
        order = torch.randperm(len(images), device=images.device)
        for start in range(0, len(images), batch_size):
            indices = order[start : start + batch_size]
            targets = labels[indices]
            outputs = model(images[indices])
            loss = F.cross_entropy(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if metrics:
                loss_sum += loss.detach() * len(targets)
                correct += (outputs.detach().argmax(dim=1) == targets).sum()

    return epoch


def trainer_overhead(
    repeats: int, device: str = "cpu", data_dir: str = DATA_DIR, val_size: int = 5000
) -> list[str]:
    """Trainer.train_one_epoch against bare loops, on `device` (the GPU check runs it on CUDA)."""
    data = mnist(data_dir, batch_size=128, val_size=val_size, seed=0, device=device)
    images, labels = data.train.tensors
    lines = []
    log_dir = Path(tempfile.mkdtemp(prefix="dlcourse-bench-"))
    for name, build in (
        ("MLP 784-800-10", lambda: MLP(hidden_sizes=[800])),
        ("linear 784-10", LinearClassifier),
    ):
        logger = TensorBoardLogger(log_dir / name)
        trainer = make_trainer(build(), data, logger, log_dir, device)
        epochs = iter(range(1, 10_000))
        timings = compare(
            {
                "bare PyTorch loop": bare_loop(build(), images, labels, 128),
                "bare loop + loss and accuracy summed every step": bare_loop(
                    build(), images, labels, 128, metrics=True
                ),
                "dlcourse Trainer.train_one_epoch (TensorBoard on)": (
                    lambda trainer=trainer, epochs=epochs: trainer.train_one_epoch(next(epochs))
                ),
            },
            repeats,
        )
        lines += report(
            f"Trainer overhead: {name}, batch 128, SGD, "
            + (f"{torch.get_num_threads()} threads" if device == "cpu" else device),
            timings,
            "bare PyTorch loop",
        )
    return lines


def data_path(repeats: int) -> list[str]:
    data = mnist(DATA_DIR, batch_size=128, seed=0)
    loader = mnist(DATA_DIR, batch_size=128, seed=0, loader="dataloader")
    images, labels = data.train.tensors
    epochs = iter(range(1, 10_000))

    def bare() -> None:
        order = torch.randperm(len(images))
        for start in range(0, len(images), 128):
            indices = order[start : start + 128]
            images[indices], labels[indices]

    def ours() -> None:
        data.train.set_epoch(next(epochs))
        for _ in data.train:
            pass

    def dataloader() -> None:
        loader.train.set_epoch(1)
        for _ in loader.train:
            pass

    timings = compare({"bare randperm indexing": bare, "dlcourse TensorBatches": ours}, repeats)
    lines = report(
        "Data path: one epoch of batches of 128, no model", timings, "bare randperm indexing"
    )
    slow = compare(
        {"bare randperm indexing": bare, "DataLoader + ToTensor + Normalize": dataloader}, 1
    )
    return lines + report(
        "Data path against torchvision's per-item DataLoader (1 round)",
        slow,
        "bare randperm indexing",
    )


def logging_cost(repeats: int) -> list[str]:
    data = mnist(DATA_DIR, batch_size=128, seed=0)
    log_dir = Path(tempfile.mkdtemp(prefix="dlcourse-bench-"))
    on = make_trainer(MLP(hidden_sizes=[800]), data, TensorBoardLogger(log_dir / "on"), log_dir)
    off = make_trainer(MLP(hidden_sizes=[800]), data, NullLogger(), log_dir)
    epochs = iter(range(1, 10_000))
    timings = compare(
        {
            "TensorBoard off (NullLogger)": lambda: off.train_one_epoch(next(epochs)),
            "TensorBoard on (every 50 steps)": lambda: on.train_one_epoch(next(epochs)),
        },
        repeats,
    )
    return report(
        "Logging: an MLP epoch with TensorBoard on / off", timings, "TensorBoard off (NullLogger)"
    )


def startup(repeats: int) -> list[str]:
    """Seconds from command start: to `--help`, and to the end of a one-step run minus its fit."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DLCOURSE_DATA_DIR": DATA_DIR}
    floor = "python: import torch, build an SGD optimizer (any training script's floor)"
    # The first optimizer imports torch._dynamo (over a second): every PyTorch training run pays it.
    minimal = "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"
    rows: dict[str, list[float]] = {
        "python -c 'import torch'": [],
        floor: [],
        "dlcourse-train --help": [],
        "one-step run: to its first training step": [],
        "one-step run, outside fit (start-up + writing results)": [],
    }
    one_step = [
        "experiment=fast_linear_mnist",
        "trainer.epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_eval_batches=1",
        "trainer.device=cpu",
        "trainer.log_every_n_steps=1",  # TensorBoard's clock marks the end of step 1
    ]
    for _ in range(repeats):
        rows["python -c 'import torch'"].append(
            time_it(lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True))
        )
        rows[floor].append(
            time_it(lambda: subprocess.run([sys.executable, "-c", minimal], check=True))
        )
        rows["dlcourse-train --help"].append(
            time_it(
                lambda: subprocess.run(
                    [str(bin_dir / "dlcourse-train"), "--help"], check=True, capture_output=True
                )
            )
        )
        with tempfile.TemporaryDirectory() as folder:
            started = time.time()  # the clock TensorBoard stamps its events with
            wall = time_it(
                lambda: subprocess.run(
                    [str(bin_dir / "dlcourse-train"), *one_step, f"hydra.run.dir={folder}"],
                    check=True,
                    capture_output=True,
                    env=env,
                )
            )
            fit = json.loads((Path(folder) / "metrics.json").read_text())["train_seconds"]
            first_step = first_event_time(Path(folder), "steps/loss") - started
        rows["one-step run: to its first training step"].append(first_step)
        rows["one-step run, outside fit (start-up + writing results)"].append(wall - fit)
    return report(
        "Start-up: seconds from command start (fast_linear_mnist, data on local disk)", rows, floor
    )


def first_event_time(run_dir: Path, tag: str) -> float:
    """When the run logged `tag` first (TensorBoard stamps each event with time.time())."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return min(event.wall_time for event in events.Scalars(tag))


def whole_runs(model: str, overrides: list[str], epochs: int, repeats: int) -> dict:
    """Interleaved timings of the bare script and dlcourse-train, each a whole run."""
    here, bin_dir = Path(__file__).resolve().parent, Path(sys.executable).parent
    same = ["optimizer=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9", "scheduler=none"]
    same += ["dataset.batch_size=128", f"trainer.epochs={epochs}", "trainer.device=cpu"]
    with tempfile.TemporaryDirectory() as folder:
        bare = [sys.executable, str(here / "bare_mnist.py"), "--model", model]
        bare += ["--epochs", str(epochs), "--data-dir", DATA_DIR, "--out", folder]
        ours = [str(bin_dir / "dlcourse-train"), *overrides, *same, "trainer.progress_bar=false"]
        runs = iter(range(1_000_000))

        def run_bare() -> None:
            subprocess.run(bare, check=True, capture_output=True)

        def run_bare_gc() -> None:
            subprocess.run([*bare, "--gc-like-dlcourse"], check=True, capture_output=True)

        def run_ours() -> None:  # a new run folder each time, as each user run gets one
            where = f"hydra.run.dir={folder}/ours_{next(runs)}"
            subprocess.run([*ours, where], check=True, capture_output=True)

        return compare({BARE: run_bare, BARE_GC: run_bare_gc, OURS: run_ours}, repeats)


BARE = "bare script (scripts/bare_mnist.py)"
BARE_GC = "bare script, garbage collection as dlcourse-train's (--gc-like-dlcourse)"
OURS = "dlcourse-train"


def outside_overhead(repeats: int, epochs: int = 3) -> list[str]:
    """What a user waits for: whole runs timed from outside the process (start-up, every epoch's
    validation, pictures and checkpoints, the test, results), dlcourse-train against the bare
    script scripts/bare_mnist.py doing the same training; ratios of medians (issue #17)."""
    lines = []
    for model, overrides in (
        ("mlp", ["model=mlp", "model.hidden_sizes=[800]"]),
        ("linear", ["model=linear"]),
    ):
        timings = whole_runs(model, overrides, epochs, repeats)
        title = f"Whole runs from outside the process: {model}, {epochs} epochs, batch 128, SGD"
        lines += report(title, timings, BARE, of="median")
        # What the framework costs beyond that: against the script that collects as it does.
        alike = statistics.median(timings[OURS]) / statistics.median(timings[BARE_GC])
        lines += [f"{OURS} / the bare script with the same garbage collection: {alike:.3f}", ""]
        print(lines[-2], flush=True)
        lines += phase_table(model, overrides, epochs)
    return lines


def phase_table(model: str, overrides: list[str], epochs: int) -> list[str]:
    """Where one dlcourse-train run of `whole_runs` spends its wall clock (scripts/run_phases.py),
    beside the bare script's whole run: what the framework's cost is made of."""
    here = Path(__file__).resolve().parent
    same = ["optimizer=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9", "scheduler=none"]
    same += ["dataset.batch_size=128", f"trainer.epochs={epochs}", "trainer.device=cpu"]
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "phases.json"
        command = [sys.executable, str(here / "run_phases.py"), str(output), *overrides, *same,
                   "trainer.progress_bar=false", f"hydra.run.dir={folder}/run"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        measured = json.loads(output.read_text())
    lines = [
        f"Where one dlcourse-train run ({model}) spends its {measured['total']:.2f} s "
        "(scripts/run_phases.py; nested phases are each shown whole):",
        "",
        "| phase | s |",
        "| --- | --- |",
        *(f"| {phase} | {value:.3f} |" for phase, value in measured["phases"].items()),
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


BENCHMARKS = {
    "overhead": trainer_overhead,
    "outside": outside_overhead,
    "data": data_path,
    "logging": logging_cost,
    "startup": startup,
}


def machine_line(repeats: int) -> str:
    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, Python "
        f"{platform.python_version()}; {repeats} interleaved rounds."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    machine = machine_line(args.repeats)
    print(machine + "\n")
    chosen = args.only != list(BENCHMARKS)
    lines = [
        machine,
        f"Command: `DLCOURSE_DATA_DIR=../shared/data python scripts/bench.py --repeats "
        f"{args.repeats}" + (f" --only {' '.join(args.only)}`" if chosen else "`"),
        "",
    ]
    for name in args.only:
        lines += BENCHMARKS[name](args.repeats)
    # All of them replace the doc's `bench` section; a chosen few get a section of their own.
    write_section("bench-" + "-".join(args.only) if chosen else "bench", lines)
    return 0


def write_section(name: str, lines: list[str], doc: Path = DOC) -> None:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->`, or append it."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = "\n".join([begin, *lines, end])
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text += f"\n{section}\n"
    doc.write_text(text)
    print(f"Wrote {doc}")


if __name__ == "__main__":
    sys.exit(main())
