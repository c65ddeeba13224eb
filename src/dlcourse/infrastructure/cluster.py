"""Runs on SLURM (launcher=slurm): the request checked against the cluster before submitting,
and what a job does when SLURM stops it.

    dlcourse-train -m launcher=slurm hydra.launcher.partition=debug optimizer.lr=0.01,0.1

How a job is stopped decides how it comes back (hydra-submitit-launcher submits through
submitit, which asks SLURM for USR2 shortly before the time limit). In every case the trainer
saves at the end of its step, on every rank, and the job does not exit by itself:
- USR2 (time limit, or submitit's preemption: SIGTERM then USR2): submitit's own handler
  requeues the job (`scontrol requeue`, counting `max_num_timeout`) and exits.
- SIGTERM from `scontrol requeue` or a preemption: SLURM has requeued the job already and ends
  it after KillWait or GraceTime. Exiting by itself inside a preemption's grace time would mark
  it FAILED, and it would not come back.
- SIGTERM from `scancel`: SLURM ends it (cancelled), saved.
The requeued job runs its command again; `resume=auto` (the preset's) continues from last.pt.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from hydra.experimental.callback import Callback

WAIT_FOR_SLURM_SECONDS = 600  # SLURM ends a requeued job within its KillWait or GraceTime
# The stop signals this process received while training (StopSignal notes them): a USR2 that
# came just after the SIGTERM the trainer stopped for still asks for a requeue.
received: set[int] = set()


def launched_rank() -> int:
    """This process's rank as its launcher set it (torchrun's RANK, SLURM's SLURM_PROCID), known
    before any process group exists; 0 for a single process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that make a run save and stop: under SLURM, also its warning signal USR2."""
    signals = (signal.SIGINT, signal.SIGTERM)
    return (*signals, signal.SIGUSR2) if under_slurm() else signals


def leave_to_slurm(signal_number: int, rank: int) -> None:
    """After a stop signal under SLURM, with the checkpoint saved: never exit by ourselves, but
    have the job requeued (USR2) or wait for SLURM to end it, requeued or cancelled (SIGTERM;
    submitit's preemption sends USR2 right after it, which then requeues). Ctrl-C (an
    interactive allocation) returns: the run just stops."""
    if signal_number == signal.SIGINT:
        return
    handler = signal.getsignal(signal.SIGUSR2)  # submitit's, restored by the StopSignal
    requeue = handler if callable(handler) else requeue_this_job
    if rank > 0:
        requeue = signal.SIG_IGN  # rank 0 requeues the job for all its tasks
    elif signal.SIGUSR2 in received | {signal_number}:
        requeue(signal_number, None)  # submitit's: checkpoint the submission, requeue, exit
    print("Saved; SLURM requeues or ends this job.", file=sys.stderr, flush=True)
    signal.signal(signal.SIGUSR2, requeue)
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_IGN)  # SLURM signals every task, sometimes twice
    time.sleep(WAIT_FOR_SLURM_SECONDS)
    sys.exit(128 + signal_number)


def requeue_this_job(signal_number: int, frame: Any) -> None:
    """USR2 in a job that submitit did not start (plain sbatch --signal=USR2@90)."""
    job = os.environ["SLURM_JOB_ID"]
    subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)


class CheckSlurmRequest(Callback):
    """Hydra callback (configs/launcher/slurm.yaml): before submitting, compare what each job
    asks for with the partition's nodes (`sinfo`); a request no node can meet would be refused
    (`Invalid generic resource`) or pend forever. One line and exit status 2 instead."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith("SlurmLauncher") or not shutil.which(
            "sinfo"
        ):
            return  # not submitting to SLURM here, or no SLURM client to ask
        partition = launcher.get("partition")
        nodes = partition_nodes(partition)
        problem = request_problem(launcher, nodes)
        if partition and not nodes:
            problem = f"SLURM has no partition {partition!r}; {partitions()}"
        if problem:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            sys.exit(2)


def partition_nodes(partition: str | None) -> list[dict[str, Any]]:
    """CPUs, memory (MB) and GPUs of each node of the partition (the default one if None)."""
    command = ["sinfo", "-h", "-N", "-o", "%N %c %m %G %P"]
    command += ["-p", partition] if partition else []
    try:
        lines = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    nodes = []
    for line in lines.splitlines():
        name, cpus, memory, gres, node_partition = line.split()[:5]
        if partition is None and not node_partition.endswith("*"):
            continue  # sinfo marks the default partition with *
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:(,]+)?:(\d+)", gres))
        nodes.append({"name": name, "cpus": int(cpus), "memory_mb": int(memory), "gpus": gpus})
    return nodes


def partitions() -> str:
    """The cluster's partitions, for a message that names a wrong one."""
    try:
        listed = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "see `sinfo` for its partitions"
    return f"its partitions: {', '.join(listed.split())} (hydra.launcher.partition=...)"


def request_problem(launcher: Any, nodes: list[dict[str, Any]]) -> str | None:
    """What in the request no node of the partition can give, and which setting to fit."""
    if not nodes:
        return None  # sinfo said nothing (or failed): let SLURM judge
    tasks = launcher.get("tasks_per_node") or 1
    wanted = {
        "cpus": (tasks * (launcher.get("cpus_per_task") or 1), "hydra.launcher.cpus_per_task"),
        "memory_mb": ((launcher.get("mem_gb") or 0) * 1024, "hydra.launcher.mem_gb"),
        "gpus": (launcher.get("gpus_per_node") or 0, "hydra.launcher.gpus_per_node"),
    }
    fits = [n for n in nodes if all(n[key] >= amount for key, (amount, _) in wanted.items())]
    if len(fits) >= (launcher.get("nodes") or 1):
        return None
    largest = {key: max(n[key] for n in nodes) for key in wanted}
    units = {"cpus": " CPUs per node", "memory_mb": " MB", "gpus": " GPUs per node"}
    short = [
        f"{setting} asks {amount:g}{units[key]} (the largest node has {largest[key]})"
        for key, (amount, setting) in wanted.items()
        if amount > largest[key]
    ]
    partition = launcher.get("partition") or "the default partition"
    return (
        f"no node of {partition} has what each job asks for: "
        + "; ".join(short or ["not enough nodes of that size"])
        + ". Fit the request to the nodes, e.g. hydra.launcher.cpus_per_task=1 "
        "hydra.launcher.mem_gb=2 hydra.launcher.gpus_per_node=null (see `sinfo -N -l`)"
    )
