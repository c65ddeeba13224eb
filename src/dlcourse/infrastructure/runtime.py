"""Seeding, device choice, numeric precision and the garbage collector: the few things every
entry point sets up."""

from __future__ import annotations

import gc
import logging
import math
import os
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.schema import DEVICES

log = logging.getLogger(__name__)

# precision setting → autocast dtype (None: plain float32)
PRECISIONS: dict[str, torch.dtype | None] = {
    "32": None,
    "bf16": torch.bfloat16,
    "16-mixed": torch.float16,
}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (when installed) and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' → the GPU when there is one, else the CPU (said in one line); 'cpu'; 'cuda[:N]'.

    Under torchrun, 'auto' and 'cuda' mean this process's own GPU (its LOCAL_RANK).
    """
    if not re.fullmatch(DEVICES, name):
        raise UserError(
            f"device={name!r} is not one dlcourse runs on; use auto, cpu, cuda, cuda:N or mps"
        )
    if name == "auto" or (name == "cuda" and torch.cuda.is_available()):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        log.info("No CUDA GPU found: training on the CPU.")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"trainer.device={name} but PyTorch sees no CUDA GPU here; "
            "use trainer.device=auto (GPU when present, else CPU) or trainer.device=cpu"
        )
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(
            f"trainer.device={name} but this machine has {torch.cuda.device_count()} GPU(s), "
            f"numbered from 0"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device=mps but this PyTorch sees no Apple GPU; use auto or cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype autocast should use for `precision`, or None for plain float32."""
    if precision not in PRECISIONS:
        raise UserError(
            f"trainer.precision={precision!r} is not known; use one of {list(PRECISIONS)}"
        )
    if precision == "16-mixed" and device.type != "cuda":
        raise UserError("trainer.precision=16-mixed needs a CUDA GPU; on the CPU use bf16 or 32")
    return PRECISIONS[precision]


def configure_determinism(deterministic: bool) -> None:
    """Deterministic kernels everywhere (and cuDNN without autotuning) when asked for."""
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (PyTorch's reproducibility notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        # Only when it changes something: the call imports torch._inductor (about a second).
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """For the run, once built, where the command's start-up held the garbage collector off
    (dlcourse-train: see dlcourse.commands.console.train): freeze every object start-up made,
    collect as usual from there on, and unfreeze them when the run ends.

    Importing torch (its compiler comes in with the first optimizer), Hydra and TensorBoard makes
    some 500,000 objects that live as long as the process. Each full collection scans them all
    again: six times in a run's start-up (≈ 0.5 s on 2 CPU cores), then at every full collection
    while training. Frozen, they are left out. Start-up's own garbage (some 30,000 objects, ≈ 20
    MB) waits with them: collecting it here would cost one more full scan (≈ 0.5 s). Unfrozen at
    the end, so that it and the run's objects can be collected once the run is over (the next
    job of a sweep runs in the same process). Where start-up left the collector on (a run
    started from Python, the tests), nothing changes.
    """
    if gc.isenabled():
        yield
        return
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()


# Memory: what a batch of the gradient check (float64) needs, and what this machine has.


def available_memory() -> float:
    """Bytes this machine can still give (MemAvailable), or infinity where it does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return math.inf


def check_batch_fits(batch_size: int, input_shape: Sequence[int]) -> None:
    """Refuse, before allocating it, a batch this machine's memory cannot hold: its inputs in
    float32 and their float64 copy (the forward pass needs more still). Allocating it would
    fail, or, where Linux overcommits memory, get the process killed."""
    needed = batch_size * math.prod(input_shape) * (4 + 8)
    available = available_memory()
    if needed > available:
        raise UserError(out_of_memory_message(batch_size, needed, available))


def out_of_memory_message(batch_size: int, needed: float | None, available: float) -> str:
    free = f"{available / 2**30:.3g} GiB" if math.isfinite(available) else "what is"
    tried = f"about {needed / 2**30:.3g} GiB for its inputs alone, " if needed else ""
    return (
        f"batch_size={batch_size} needs {tried}more memory than {free} free here; lower "
        "batch_size (a gradient check needs only a few samples: the default is 4)"
    )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an allocation failed: MemoryError, torch's OutOfMemoryError, or the RuntimeError
    a CPU allocator raises ("DefaultCPUAllocator: can't allocate memory")."""
    text = str(error).lower()
    return isinstance(error, MemoryError | torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("allocate" in text or "out of memory" in text)
    )
