"""Data-parallel training with `torch.distributed` (DDP), started by `torchrun`.

    torchrun --nproc_per_node=2 -m dlcourse.commands.train trainer.device=cpu    # gloo on CPUs
    torchrun --nproc_per_node=4 -m dlcourse.commands.train experiment=cnn_mnist  # NCCL on GPUs

A single process gets `SingleProcess`, whose collectives do nothing, so the training loop reads
the same either way; `ProcessGroup` is the real thing.
"""

from __future__ import annotations

import logging
import os
import signal

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

SIGNAL_EVERY_N_STEPS = 10  # how often processes agree on a stop signal (SIGINT / SIGTERM)


class SingleProcess:
    rank, world_size, local_rank = 0, 1, 0
    is_main = True

    def all_reduce_sums(
        self, sums: dict[str, torch.Tensor], count: int
    ) -> tuple[dict[str, torch.Tensor], int]:
        return sums, count

    def agree_on_signal(self, received: int, step: int) -> int:
        """The stop signal any process received (0: none), the same on every process."""
        return received

    def broadcast(self, value: str) -> str:
        return value

    def barrier(self) -> None:
        pass

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model

    def check_in_sync(self, model: nn.Module) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessGroup(SingleProcess):
    """This process's place among `world_size` processes, and the collectives the loop needs."""

    def __init__(self, backend: str) -> None:
        dist.init_process_group(backend)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.is_main = self.rank == 0
        self.device = (
            torch.device("cuda", self.local_rank) if backend == "nccl" else torch.device("cpu")
        )

    def all_reduce_sums(
        self, sums: dict[str, torch.Tensor], count: int
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Sum every metric and the sample count over all processes (metrics stay sums)."""
        names = sorted(sums)
        values = [
            *(sums[name].float().to(self.device) for name in names),
            torch.tensor(float(count), device=self.device),
        ]
        stacked = torch.stack(values)
        dist.all_reduce(stacked)
        return {name: stacked[i] for i, name in enumerate(names)}, int(stacked[-1].item())

    def agree_on_signal(self, received: int, step: int) -> int:
        """Asked every step, but answered every `SIGNAL_EVERY_N_STEPS`: reading the agreed value
        waits for the device, and a wait per step would stall the GPU's queue of work. Every
        process is at the same step, so they all join the same collectives."""
        if step % SIGNAL_EVERY_N_STEPS:
            return 0
        # The strongest signal wins: USR2 (SLURM: requeue me) over SIGTERM over SIGINT.
        strength = [0, signal.SIGINT, signal.SIGTERM, signal.SIGUSR2]
        tensor = torch.tensor(strength.index(received) if received in strength else 2)
        dist.all_reduce(tensor.to(self.device), op=dist.ReduceOp.MAX)
        return int(strength[int(tensor.item())])

    def broadcast(self, value: str) -> str:
        """Rank 0's value on every rank (the run folder, so that all ranks share one)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def check_in_sync(self, model: nn.Module) -> None:
        """DDP keeps the copies equal; say so (or fail) once, at the end of training."""
        with torch.no_grad():
            flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
            low, high = flat.clone(), flat.clone()
            dist.all_reduce(low, op=dist.ReduceOp.MIN)
            dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(
                "the ranks' parameters differ after training: DDP lost synchronisation"
            )
        log.info("Parameters are identical on all %d ranks.", self.world_size)

    def close(self) -> None:
        dist.destroy_process_group()


def setup(device_name: str) -> SingleProcess:
    """A process group when started by torchrun (or as SLURM tasks) with more than one process,
    else SingleProcess."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment  # the sweep extra

        TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR, ... from SLURM's
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SingleProcess()
    use_gpus = device_name != "cpu" and torch.cuda.is_available()
    group = ProcessGroup("nccl" if use_gpus else "gloo")
    if use_gpus:
        torch.cuda.set_device(group.local_rank)
    log.info("Rank %d of %d (%s).", group.rank, group.world_size, "NCCL" if use_gpus else "gloo")
    return group


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, out of torch.compile's and DDP's wrappers (what checkpoints store)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
