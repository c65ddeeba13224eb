"""Every command that README.md and docs/*.md show runs, in a shortened form, so docs cannot rot.

Commands are read from the documents' ```bash blocks. Each runs as its installed script would
(in this process, through dlcourse.commands.console), in a workspace where the documents'
placeholders exist
(`outputs/runs/<run>` is a stopped run, `<inpainting run>` an inpainting run, `digit.png` an
image, `my_photos` an image folder, ...), with tiny data and limits added (one epoch of two
batches; each Optuna search adds two trials to the study). A few need what this machine may
lack (a SLURM cluster, four GPUs) or are not one-shot commands (TensorBoard's server, `make
test` itself, the benchmarks): they are listed, with the reason, in SKIPPED.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import BIN, COMMANDS, REPO_ROOT, compose_config, make_image_folder, quick_overrides
from PIL import Image

from dlcourse.infrastructure.checkpoint import load_checkpoint, save_checkpoint
from dlcourse.run import train
from dlcourse.sweeps.seeds import train_seeds

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# (a piece of the command, why it does not run here)
SKIPPED = [
    (
        "make ",
        "make test is this suite; make train runs the default experiment, as dlcourse-train does",
    ),
    ("launcher=slurm", "needs a SLURM cluster"),
    ("--nproc_per_node=4", "needs 4 GPUs"),
    ("tensorboard ", "a server, not a one-shot command"),
    ("export DLCOURSE", "sets the shell's environment (the test sets DLCOURSE_DATA_DIR itself)"),
    ("python scripts/", "benchmarks, minutes long (make benchmark)"),
]
SHORT = [
    "trainer.limit_train_batches=2",
    "trainer.limit_eval_batches=1",
    "trainer.progress_bar=false",
]


def documented_commands() -> list[tuple[str, str]]:
    """(document, command line) for each command in the documents' bash blocks."""
    commands = []
    for document in DOCUMENTS:
        for block in re.findall(r"```bash\n(.*?)```", document.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()  # the comment after the command
                if line and not line.startswith("#"):
                    commands.append((document.name, line))
    return commands


def skip_reason(command: str) -> str | None:
    return next((reason for piece, reason in SKIPPED if piece in command), None)


@pytest.fixture(scope="module")
def workspace(tiny_mnist, tiny_pairs, tmp_path_factory) -> Path:
    """A folder with what the documents' placeholders name."""
    root = tmp_path_factory.mktemp("docs")
    # A stopped run: its checkpoint after epoch 1 of 3 (resumes pick it up from there).
    stopped = root / "stopped_run"
    settings = ["model=mlp", "model.hidden_sizes=[16]", *quick_overrides(tiny_mnist)]
    train(compose_config([*settings, "trainer.epochs=1"]), stopped)
    last = load_checkpoint(stopped / "checkpoints" / "last.pt")
    last["config"]["trainer"]["epochs"] = 3
    save_checkpoint(last, stopped / "checkpoints" / "last.pt")
    inpainting = [
        "experiment=conv_inpainting",
        "model.widths=[8,16]",
        *quick_overrides(tiny_mnist),
        *SHORT,
    ]
    train(compose_config(inpainting), root / "inpainting_run")
    for name in ("digit.png", "more.jpg", "my_digit.png"):
        Image.new("L", (40, 40), 255).save(root / name)
    Image.new("RGB", (36, 30), (120, 80, 40)).save(root / "photo.png")
    holes = Image.new("L", (36, 30), 0)
    holes.paste(255, (5, 5, 15, 15))
    holes.save(root / "holes.png")
    shutil.copytree(tiny_pairs, root / "my_pairs")
    make_image_folder(root / "my_photos", train=4, test=2)
    for name, model in (("group_a", "mlp"), ("group_b", "linear")):  # seed groups to compare
        sizes = ["model.hidden_sizes=[16]"] if model == "mlp" else []
        group = [f"model={model}", *sizes, "seeds=2", *SHORT]
        train_seeds(compose_config([*group, *quick_overrides(tiny_mnist)]), root / name, False, {})
    return root


def prepared(command: str, workspace: Path, tiny_mnist: Path) -> list[str]:
    """The command's arguments with its placeholders filled and tiny limits added."""
    if "resume=outputs/runs/<run>" in command:  # each resume gets a stopped run of its own
        run = workspace / "outputs" / "runs" / f"stopped_{abs(hash(command))}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(workspace / "stopped_run", run)
        command = command.replace("outputs/runs/<run>", str(run))
    sweeps = sorted((workspace / "outputs" / "multirun").glob("*"))
    replacements = {
        "outputs/runs/<run>": str(workspace / "stopped_run"),
        "outputs/runs/<group A>": str(workspace / "group_a"),
        "outputs/runs/<group B>": str(workspace / "group_b"),
        "<inpainting run>": str(workspace / "inpainting_run"),
        "outputs/multirun/<time>_<id>": str(sweeps[-1]) if sweeps else "no-sweep-yet",
        "outputs/multirun/<sweep>": str(sweeps[-1]) if sweeps else "no-sweep-yet",
        "/path/to/data": str(tiny_mnist),
    }
    for placeholder, value in replacements.items():
        command = command.replace(placeholder, value)
    words = shlex.split(command)
    if "hparams_search=mnist_optuna" in words:  # each search adds two trials to the study
        done = len(list((workspace / "outputs" / "multirun" / "mnist_mlp").glob("[0-9]*_*")))
        words = [w for w in words if not w.startswith("hydra.sweeper.n_trials=")]
        words.append(f"hydra.sweeper.n_trials={done + 2}")
    if words[0] == "python" and words[1:3] == ["-m", "dlcourse.commands.train"]:
        words = ["dlcourse-train", *words[3:]]
    if words[0] == "dlcourse-gradcheck":  # two sampled entries per parameter, not 20 or 50
        words = [w for w in words if not w.startswith("elements_per_parameter=")]
        return [*words, "elements_per_parameter=2"]
    if words[0] == "dlcourse-lr-find":  # 20 steps of the rate sweep, not 100
        words = [*words, "lr_find.steps=20"]
    trains = words[0] in ("dlcourse-train", "dlcourse-lr-find")
    if not trains or any(w in ("--help", "--cfg", "--describe") for w in words):
        return words
    # The config it composes (a sweep's first value of each list), to see which limits apply.
    settings = [
        w for w in words[1:] if "=" in w and not w.startswith(("hydra.", "resume=", "lr_find."))
    ]
    if "-m" in words:  # a sweep: compose its first job
        settings = [w if "[" in w else w.split(",")[0] for w in settings]
    cfg = compose_config(settings)
    extra = (
        [*SHORT, "trainer.epochs=1"]
        if not any(w.startswith(("trainer.epochs=", "resume=")) for w in words)
        else SHORT
    )
    if "val_size" in cfg.dataset and not any(w.startswith("resume=") for w in words):
        extra = [*extra, "dataset.val_size=50"]
    if cfg.dataset.get("train_subset") and cfg.dataset.train_subset > 100:
        extra = [*extra, "dataset.train_subset=100"]
    return [*words, *extra]


COMMAND_LINES = documented_commands()


@pytest.mark.parametrize(
    ("document", "command"), COMMAND_LINES, ids=[f"{d}: {c[:60]}" for d, c in COMMAND_LINES]
)
def test_documented_command_runs(document, command, workspace, tiny_mnist, monkeypatch, capsys):
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    if command.startswith("torchrun"):
        short = [*SHORT, "trainer.epochs=1", "dataset.val_size=50"]
        words = [str(BIN / "torchrun"), *shlex.split(command)[1:], *short]
        env = {"DLCOURSE_DATA_DIR": str(tiny_mnist), "PATH": f"{BIN}:/usr/bin:/bin"}
        result = subprocess.run(
            words, cwd=workspace, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DLCOURSE_DATA_DIR", str(tiny_mnist))
    monkeypatch.setenv(
        "HYDRA_FULL_ERROR", "1"
    )  # what dlcourse.commands.console sets, undone after the test
    threads = torch.get_num_threads()  # a parallel sweep's jobs set theirs
    words = prepared(command, workspace, tiny_mnist)
    monkeypatch.setattr(sys, "argv", words)
    try:
        if words[:2] == ["python", "-m"]:  # a course demo: python -m dlcourse.<module> [options]
            monkeypatch.setattr(sys, "argv", words[2:])
            importlib.import_module(words[2]).main()
        else:
            COMMANDS[words[0]]()
        status = 0
    except SystemExit as exited:
        status = exited.code if isinstance(exited.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    output = capsys.readouterr()
    assert status == 0, f"{document}: {' '.join(words)}\n{output.out[-1500:]}\n{output.err[-1500:]}"


def test_every_documented_command_is_run_or_skipped_for_a_stated_reason():
    """Nothing is skipped silently: every command either runs above or matches SKIPPED."""
    known = (*COMMANDS, "python -m dlcourse.", "torchrun")
    for document, command in COMMAND_LINES:
        assert command.startswith(known) or skip_reason(command), f"{document}: {command}"
