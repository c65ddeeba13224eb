"""launcher=slurm against a real SLURM cluster: job arrays, the request check, and jobs that are
requeued (scontrol requeue, preemption's SIGTERM + USR2, the time limit's USR2, a real
preemption) resuming to the same weights as a job left alone, on one rank and on two (DDP), a
cancelled job, and an Optuna search whose SLURM jobs are pruned.

The cluster: `bash .ci/slurm/start.sh` (as root; .ci/run does it). Without `sinfo` these tests
skip. Each job trains an MLP on 3,000 generated digits with batch 4 and one thread: about 700
steps an epoch, long enough to be stopped part-way through its second epoch.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from helpers import BIN, tiny_digits, write_idx
from optuna.storages.journal import JournalFileBackend, JournalStorage

from dlcourse.infrastructure.checkpoint import load_checkpoint


def cluster_ready() -> bool:
    if not shutil.which("sinfo"):
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return states.returncode == 0 and bool({"idle", "mixed"} & set(states.stdout.split()))


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not cluster_ready(), reason="needs a SLURM cluster: bash .ci/slurm/start.sh"
    ),
]

# The preset asks for a GPU node (8 CPUs, 32 GB, a GPU per task); this cluster's node has 2 CPUs.
FITTED = [
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
]
WAIT_SECONDS = 400


@pytest.fixture(scope="module")
def slurm_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm_data")
    for prefix, count, seed in (("train", 3000, 0), ("t10k", 100, 1)):
        images, labels = tiny_digits(count, seed)
        write_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def training(data: Path, epochs: int = 3) -> list[str]:
    return [
        f"paths.data_dir={data}",
        "dataset.val_size=300",
        "dataset.batch_size=4",
        "model=mlp",
        "model.hidden_sizes=[64]",
        f"trainer.epochs={epochs}",
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.deterministic=true",
    ]


def sweep(cwd: Path, overrides: list[str]) -> subprocess.Popen:
    command = [str(BIN / "dlcourse-train"), "-m", "launcher=slurm", *FITTED, *overrides]
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> str:
    try:
        return process.communicate(timeout=WAIT_SECONDS)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(
            f"the sweep did not end in {WAIT_SECONDS} s: {process.communicate()[0][-3000:]}"
        ) from None


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared: {finish(process)[-3000:]}")
        time.sleep(0.1)


def slurm_job_id(sweep_dir: Path, task: int) -> str:
    """The SLURM id of array task `task` (submitit's folder .submitit/<array>_<task>), or of the
    sweep's one job (.submitit/<job>)."""
    folders = (sweep_dir / ".submitit").iterdir()
    names = sorted(d.name for d in folders if re.fullmatch(r"\d+(_\d+)?", d.name))
    return next((name for name in names if name.endswith(f"_{task}")), names[0])


def final_state(job_id: str) -> str:
    """The job's state in SLURM's accounting once it has ended (its result file, which the sweep
    waits for, comes a moment before the job's processes end)."""
    deadline = time.monotonic() + 60
    while True:
        state = subprocess.run(
            ["sacct", "-n", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True
        ).stdout.strip()
        if state not in ("RUNNING", "COMPLETING", "PENDING", "REQUEUED", "") or (
            time.monotonic() > deadline
        ):
            return state
        time.sleep(0.5)


def same_weights(first: Path, second: Path) -> bool:
    a = load_checkpoint(first / "checkpoints" / "last.pt")
    b = load_checkpoint(second / "checkpoints" / "last.pt")
    return a["step"] == b["step"] and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"]
    )


def test_a_sweep_runs_as_a_job_array(slurm_data, tmp_path):
    process = sweep(
        tmp_path,
        ["optimizer.lr=0.01,0.03,0.1", *training(slurm_data, epochs=1), "dataset.val_size=2500"],
    )
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    sweep_dir = next((tmp_path / "outputs" / "multirun").iterdir())
    jobs = sorted(sweep_dir.glob("*_optimizer.lr=*"))
    assert len(jobs) == 3 and all((job / "metrics.json").is_file() for job in jobs)
    array = slurm_job_id(sweep_dir, 0).split("_")[0]
    assert {slurm_job_id(sweep_dir, task) for task in range(3)} == {
        f"{array}_{t}" for t in range(3)
    }


def test_a_request_no_node_can_meet_is_refused_before_submitting(tmp_path):
    command = [
        str(BIN / "dlcourse-train"),
        "-m",
        "launcher=slurm",
        "hydra.launcher.partition=debug",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "hydra.launcher.cpus_per_task asks 8 CPUs per node (the largest node has" in result.stderr
    )
    assert not list(tmp_path.glob("outputs/multirun/*/.submitit"))


# How each way of stopping a job reaches it (submitit's job._interrupt() sends the same).
URGENT = "preemption by an urgent job"
STOPS = {
    "scontrol requeue": [["scontrol", "requeue", "{job}"]],
    "preemption (SIGTERM, USR2)": [
        ["scancel", "--signal=TERM", "{job}"],
        ["scancel", "--signal=USR2", "{job}"],
    ],
    "time limit warning (USR2)": [["scancel", "--signal=USR2", "{job}"]],
    # A job of the higher-priority partition that needs the whole node preempts both twins
    # (SIGTERM, then SIGKILL after the partition's GraceTime: .ci/run starts it with 20 s).
    URGENT: [["sbatch", "-p", "urgent", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 1"]],
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stopped_job_is_requeued_and_ends_with_the_weights_of_one_left_alone(
    stop, slurm_data, tmp_path
):
    """Two identical jobs (seed=7,7); the first is stopped after its first epoch: a signal lands
    in the second, SLURM's preemption when its scheduler gets to it (so more epochs: these are
    a fraction of a second each)."""
    epochs = 8 if stop == URGENT else 3
    overrides = ["hydra.sweep.dir=outputs/multirun/twins", "seed=7,7"]
    process = sweep(tmp_path, [*overrides, *training(slurm_data, epochs)])
    sweep_dir = tmp_path / "outputs" / "multirun" / "twins"
    stopped, left_alone = sweep_dir / "0_seed=7", sweep_dir / "1_seed=7"
    wait_for(stopped / "checkpoints" / "last.pt", process)  # epoch 1 is done
    job = slurm_job_id(sweep_dir, 0)
    for command in STOPS[stop]:
        subprocess.run([part.format(job=job) for part in command], check=True)
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    log = (stopped / "train.log").read_text()
    saved = re.search(r"stopped by SIG(?:TERM|USR2) after step (\d+)", log)
    assert saved, log[-3000:]
    resumed = re.search(r"Resuming from .* \(epoch (\d+), step (\d+)\)", log)
    assert resumed and resumed[2] == saved[1], log[-3000:]  # where it stopped
    assert int(resumed[1]) >= 2 if stop == URGENT else resumed[1] == "2"
    assert same_weights(stopped, left_alone)
    assert not (stopped / "failed.json").exists()
    assert final_state(job) == "COMPLETED"


def test_a_cancelled_job_saves_and_stays_cancelled(slurm_data, tmp_path):
    process = sweep(tmp_path, ["hydra.sweep.dir=outputs/multirun/cancel", *training(slurm_data)])
    run_dir = tmp_path / "outputs" / "multirun" / "cancel" / "0"
    wait_for(run_dir / "checkpoints" / "last.pt", process)
    job = slurm_job_id(run_dir.parent, 0)
    subprocess.run(["scancel", job], check=True)
    finish(process)
    assert process.returncode != 0  # the sweep's job did not finish
    assert final_state(job) == "CANCELLED" or final_state(job).startswith("CANCELLED")
    saved = re.search(r"stopped by SIGTERM after step (\d+)", (run_dir / "train.log").read_text())
    assert saved and load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == int(saved[1])
    assert not (run_dir / "metrics.json").exists()


def test_a_two_rank_job_stopped_by_usr2_resumes_on_both_ranks(slurm_data, tmp_path):
    overrides = [
        "hydra.sweep.dir=outputs/multirun/ddp",
        "hydra.launcher.tasks_per_node=2",
        *training(slurm_data),
    ]
    process = sweep(tmp_path, overrides)
    run_dir = tmp_path / "outputs" / "multirun" / "ddp" / "0"
    wait_for(run_dir / "checkpoints" / "last.pt", process)
    job = slurm_job_id(run_dir.parent, 0)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 3
    assert not (run_dir / "failed.json").exists()
    assert final_state(job) == "COMPLETED"
    log = (run_dir / "train.log").read_text()
    assert "Resuming from" in log
    # rank 0 alone writes train.log: each epoch's line once
    assert len(re.findall(r"epoch 3/3 ", log)) == 1, log[-3000:]
    submitit_logs = "".join(p.read_text() for p in (run_dir.parent / ".submitit").rglob("*.out"))
    # Both ranks ran again after the requeue, and rank 0 alone speaks for them (the other rank
    # prints warnings only): the weights were checked identical on both.
    assert submitit_logs.count("global_rank=1(2)") >= 2, submitit_logs[-3000:]
    assert submitit_logs.count("Parameters are identical on all 2 ranks.") == 1


def test_an_optuna_search_prunes_jobs_that_slurm_runs(slurm_data, tmp_path):
    overrides = [
        "hparams_search=mnist_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        # Every trial is pruned after its first epoch: val/acc is never above 1.1.
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=1.1",
        *training(slurm_data),
        "dataset.batch_size=32",
    ]
    process = sweep(tmp_path, overrides)
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    sweep_dir = tmp_path / "outputs" / "multirun" / "mnist_mlp"
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    study = optuna.load_study(study_name="mnist_mlp", storage=storage)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    for job in (p for p in sweep_dir.iterdir() if p.name[0].isdigit()):
        assert json.loads((job / "metrics.json").read_text())["pruned_at_epoch"] == 1
