"""Every console command, walked with a corpus of bad inputs: each gets one clear message and a
non-zero exit, never a traceback and never a silent wrong run.

The commands run in this process (their `main`, with sys.argv set as the shell would), which
is what lets the corpus be large; tests/test_cli.py runs them in subprocesses.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import call, compose_config, quick_overrides, write_idx
from PIL import Image

from dlcourse.run import train as train_run
from dlcourse.sweeps.report import report as sweep_report


@pytest.fixture(scope="module")
def workspace(tiny_mnist, tmp_path_factory) -> dict[str, Path]:
    """What the corpus points at: checkpoints of both tasks, images, files that are no checkpoint,
    a sweep with damaged files."""
    root = tmp_path_factory.mktemp("workspace")
    train_run(
        compose_config(["model=mlp", "model.hidden_sizes=[16]", *quick_overrides(tiny_mnist)]),
        root / "classifier",
    )
    inpainting = ["experiment=conv_inpainting", "model.widths=[8,16]", *quick_overrides(tiny_mnist)]
    train_run(compose_config(inpainting), root / "inpainter")
    Image.new("L", (28, 28), 0).save(root / "digit.png")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "photo.png")
    (root / "text.txt").write_text("not an image, not a checkpoint\n")
    (root / "a_folder").mkdir()
    sweep_dir = root / "sweep"
    kinds = '"monitor": "val/acc", "higher_is_better": {"acc": true}'
    for job, overrides, metrics in (
        ("0", "- optimizer.lr=0.1\n", '{"val/acc": 0.9, ' + kinds + "}"),
        ("1", "- optimizer.lr=0.2\n", '{"val/acc": 0.'),  # killed mid-write
        ("2", "- !!python/object/apply:os.system ['touch pwned']\n", '{"val/acc": 0.8}'),
        ("3", "- optimizer.lr=0.4\n", '{"val/acc": NaN}'),
    ):
        (sweep_dir / job / ".hydra").mkdir(parents=True)
        (sweep_dir / job / ".hydra" / "overrides.yaml").write_text(overrides)
        (sweep_dir / job / "metrics.json").write_text(metrics)
    (sweep_dir / "4" / ".hydra").mkdir(parents=True)
    (sweep_dir / "4" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.5\n")
    (sweep_dir / "4" / "failed.json").write_text('{"error": "the loss bec')
    return {
        "root": root,
        "classifier": root / "classifier",
        "inpainter": root / "inpainter",
        "sweep": sweep_dir,
    }


def corpus(w: dict[str, Path], data: Path) -> list[tuple[str, list[str], str]]:
    """(command, arguments, a piece of the expected message)."""
    root, classifier, inpainter = w["root"], str(w["classifier"]), str(w["inpainter"])
    tiny = [f"paths.data_dir={data}", "dataset.val_size=50", "trainer.device=cpu"]
    return [
        ("dlcourse-train", ["optimizer.lr=1e308", *tiny], "optimizer.lr=1e+308 is impossible"),
        ("dlcourse-train", ["optimizer.lr=nan", *tiny], "optimizer.lr=nan is impossible"),
        ("dlcourse-train", ["optimizer.lr=inf", *tiny], "optimizer.lr=inf is impossible"),
        (
            "dlcourse-train",
            ["trainer.num_threads=-1", *tiny],
            "trainer.num_threads=-1 is impossible",
        ),
        (
            "dlcourse-train",
            ["seed=18446744073709551616", *tiny],
            "seed=18446744073709551616 is impossible",
        ),
        ("dlcourse-train", [*tiny, "trainer.device=meta"], "trainer.device=meta is impossible"),
        ("dlcourse-train", [*tiny, "trainer.device=cuda:99"], "cuda:99"),
        (
            "dlcourse-train",
            ["model=mlp", "model.hidden_sizes=[0]", *tiny],
            "model.hidden_sizes=[0] is impossible",
        ),
        (
            "dlcourse-train",
            ["model=mlp", "model.hidden_sizes=[1000000000000]", *tiny],
            "cannot build model",
        ),
        ("dlcourse-train", ["model=mlp", "model.dropout=2.0", *tiny], "cannot build model"),
        (
            "dlcourse-train",
            ["model=mlp", "model.activation=swish", *tiny],
            "unknown activation 'swish'",
        ),
        (
            "dlcourse-train",
            ["trainer.limit_train_batches=0", *tiny],
            "trainer.limit_train_batches=0 is impossible",
        ),
        (
            "dlcourse-train",
            ["trainer.limit_eval_batches=-3", *tiny],
            "trainer.limit_eval_batches=-3 is impossible",
        ),
        (
            "dlcourse-train",
            ["scheduler=cosine", "scheduler.min_lr=-1", *tiny],
            "scheduler.min_lr=-1 is impossible",
        ),
        (
            "dlcourse-train",
            ["scheduler=step", "scheduler.gamma=0", *tiny],
            "scheduler.gamma=0 is impossible",
        ),
        (
            "dlcourse-train",
            ["scheduler=onecycle", "scheduler.max_lr=-1", *tiny],
            "scheduler.max_lr=-1 is impossible",
        ),
        (
            "dlcourse-train",
            ["loss.label_smoothing=2", *tiny],
            "loss.label_smoothing=2 is impossible",
        ),
        (
            "dlcourse-train",
            ["trainer.precision=64", *tiny],
            "trainer.precision=64 has the wrong type",
        ),
        ("dlcourse-train", ["trainer.precision=16-mixed", *tiny], "16-mixed needs a CUDA GPU"),
        (
            "dlcourse-train",
            ["dataset.val_size=1000000", f"paths.data_dir={data}"],
            "dataset.val_size=1000000 must be",
        ),
        (
            "dlcourse-train",
            ["dataset.train_subset=0", *tiny],
            "dataset.train_subset=0 is impossible",
        ),
        ("dlcourse-train", ["model=alexnet", *tiny], "AlexNet needs images of at least 63×63"),
        (
            "dlcourse-train",
            [f"paths.output_dir={root / 'text.txt'}", *tiny],
            "cannot make the output folder",
        ),
        ("dlcourse-train", [f"paths.output_dir={root / ('x' * 300)}", *tiny], "File name too long"),
        (
            "dlcourse-train",
            [f"resume={root / 'nowhere'}", *tiny],
            "neither a checkpoint file nor a run folder",
        ),
        ("dlcourse-train", [f"resume={root / 'a_folder'}", *tiny], "no checkpoint in run folder"),
        ("dlcourse-train", [f"resume={root / 'text.txt'}", *tiny], "not a PyTorch checkpoint"),
        (
            "dlcourse-train",
            [f"resume={classifier}", "model.num_classes=5", *tiny],
            "would change what the stopped run",
        ),
        ("dlcourse-train", ["optimizer.lrr=1", *tiny], "optimizer.lrr"),
        ("dlcourse-train", ["model=resnet"], "model=resnet is not an option of model"),
        ("dlcourse-eval", [], "dlcourse-eval needs a checkpoint"),
        (
            "dlcourse-eval",
            [f"ckpt_path={root / 'nowhere.pt'}"],
            "neither a checkpoint file nor a run folder",
        ),
        ("dlcourse-eval", [f"ckpt_path={root / 'text.txt'}"], "not a PyTorch checkpoint"),
        (
            "dlcourse-eval",
            [f"ckpt_path={classifier}", f"output_path={root / 'a_folder'}"],
            "is a folder; name a file",
        ),
        (
            "dlcourse-eval",
            [f"ckpt_path={classifier}", "device=meta"],
            "device='meta' is not one dlcourse runs on",
        ),
        (
            "dlcourse-predict",
            [str(root / "nowhere.pt"), str(root / "digit.png")],
            "neither a checkpoint file",
        ),
        ("dlcourse-predict", [classifier, str(root / "nowhere.png")], "cannot read image"),
        ("dlcourse-predict", [classifier, str(root / "text.txt")], "cannot read image"),
        (
            "dlcourse-predict",
            [classifier, str(root / "digit.png"), "--top-k", "0"],
            "--top-k 0: show at least 1",
        ),
        (
            "dlcourse-predict",
            [classifier, str(root / "digit.png"), "--box", "1,1,2,2"],
            "--mask and --box are for inpainting",
        ),
        (
            "dlcourse-predict",
            [inpainter, str(root / "photo.png"), "--box=-1,0,5,5"],
            "is not inside the 30×40 image",
        ),
        (
            "dlcourse-predict",
            [inpainter, str(root / "photo.png"), "--box", "0,0,31,5"],
            "is not inside the 30×40 image",
        ),
        (
            "dlcourse-predict",
            [inpainter, str(root / "photo.png"), "--box", "0,0,0,5"],
            "is not inside",
        ),
        (
            "dlcourse-predict",
            [inpainter, str(root / "photo.png"), "--box", "a,b"],
            "needs --mask MASK.png or --box",
        ),
        (
            "dlcourse-predict",
            [inpainter, str(root / "photo.png"), "--box", "1,1,5,5", "--output", "/no/dir/x.png"],
            "the folder /no/dir does not exist",
        ),
        (
            "dlcourse-predict",
            [
                inpainter,
                str(root / "photo.png"),
                "--box",
                "1,1,5,5",
                "--output",
                str(root / "x.txt"),
            ],
            "name an image file",
        ),
        (
            "dlcourse-predict",
            [inpainter, str(root / "photo.png"), str(root / "digit.png"), "--box", "1,1,5,5"],
            "one image at a time",
        ),
        ("dlcourse-sweep-report", [str(root / "nowhere")], "is not a folder"),
        ("dlcourse-sweep-report", [str(root / "a_folder")], "holds no sweep jobs"),
        (
            "dlcourse-sweep-report",
            [str(w["sweep"]), "--metric", "val/f1"],
            "metric 'val/f1' is in no job's metrics.json",
        ),
        ("dlcourse-gradcheck", ["epsilon=-1"], "epsilon=-1 is impossible"),
        (
            "dlcourse-gradcheck",
            ["elements_per_parameter=0"],
            "elements_per_parameter=0 is impossible",
        ),
        ("dlcourse-gradcheck", ["batch_size=0"], "batch_size=0 is impossible"),
        ("dlcourse-gradcheck", ["epsilon=1e-12"], "epsilon=1e-12 is too small for this loss"),
        ("dlcourse-gradcheck", ["input_shape=[0,1,1]"], "input_shape=[0, 1, 1] should be"),
        ("dlcourse-gradcheck", ["model.hidden_sizes=[0]"], "model.hidden_sizes=[0] is impossible"),
        ("dlcourse-summary", ["input_shape=[-1]"], "input_shape=[-1] should be"),
        ("dlcourse-summary", ["input_shape=abc"], "input_shape='abc' should be"),
        ("dlcourse-summary", ["input_shape=[1,2,3,4]"], "should be one input's [C,H,W]"),
        ("dlcourse-summary", ["input_shape=[1,2,2]"], "2×2 images are too small for these conv"),
        (
            "dlcourse-summary",
            ["model=mlp", "model.hidden_sizes=[0]"],
            "model.hidden_sizes=[0] is impossible",
        ),
    ]


def test_every_command_answers_bad_input_in_one_line_without_a_traceback(
    workspace, tiny_mnist, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    failures = []
    for command, argv, expected in corpus(workspace, tiny_mnist):
        status, output = call(command, argv, monkeypatch, capsys)
        if status == 0 or "Traceback" in output or expected not in output:
            failures.append(f"{command} {' '.join(argv)} → {status}: {output[-300:]}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "pwned").exists()
    for run_dir in (
        tmp_path / "outputs" / "runs"
    ).iterdir():  # refused once it had claimed a folder:
        assert "error: " in (run_dir / "train.log").read_text()  # its log says why
        assert not (run_dir / "checkpoints").exists()


def test_the_sweep_report_reads_what_it_can_and_lists_what_it_could_not(
    workspace, monkeypatch, capsys
):
    status, output = call("dlcourse-sweep-report", [str(workspace["sweep"])], monkeypatch, capsys)
    assert status == 0 and "Traceback" not in output, output
    assert "| ★ | 0 | 0.1 | 0.9000 |" in output  # the job whose files are whole
    assert "## Failed jobs\n\n- job 4 (optimizer.lr=0.5): failed" in output
    assert "- job 3 (optimizer.lr=0.4): val/acc=nan" in output  # a NaN metric is not "failed: None"
    assert "job 1: metrics.json could not be read (JSONDecodeError" in output
    assert "job 2: .hydra/overrides.yaml could not be read (ConstructorError)" in output
    assert "job 4: failed.json could not be read" in output
    assert not Path("pwned").exists()


def test_a_config_dir_yaml_with_python_tags_runs_nothing(tiny_mnist, tmp_path, monkeypatch, capsys):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "evil.yaml").write_text(
        "# @package _global_\n"
        f"seed: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n"
    )
    argv = [f"--config-dir={tmp_path}", "experiment=evil", *quick_overrides(tiny_mnist)]
    status, output = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status != 0 and "Traceback" not in output and "python/object" in output, output
    assert not (tmp_path / "pwned").exists()


def test_generated_overrides_are_refused_in_one_line_or_run(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Random keys of the composed config set to random bad values: each run either trains (the
    value was fine there) or stops in one line, before training, with a non-zero exit."""
    monkeypatch.chdir(tmp_path)
    config = compose_config(["model=mlp", "scheduler=step"])
    keys = [
        f"{group}.{key}"
        for group in ("model", "optimizer", "scheduler", "loss", "trainer", "dataset")
        for key, value in config[group].items()
        if not key.startswith("_") and not isinstance(value, dict)
    ]
    values = [
        "-1",
        "0",
        "1e308",
        "-1e-9",
        "nan",
        "abc",
        "[]",
        "[1,-2]",
        "null",
        "true",
        "99999999999999999999",
    ]
    generator = random.Random(0)
    outcomes = {"refused": 0, "ran": 0}
    for _ in range(60):
        key, value = generator.choice(keys), generator.choice(values)
        argv = [
            "model=mlp",
            "scheduler=step",
            *quick_overrides(tiny_mnist),
            "trainer.epochs=1",
            "trainer.progress_bar=false",
        ]
        status, output = call("dlcourse-train", [*argv, f"{key}={value}"], monkeypatch, capsys)
        assert "Traceback" not in output, (key, value, output[-2000:])
        if status == 0:
            outcomes["ran"] += 1
        else:
            errors = [line for line in output.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 or "Error" in output, (
                key,
                value,
                output[-600:],
            )  # ours, or Hydra's own
            outcomes["refused"] += 1
    assert outcomes["refused"] > outcomes["ran"], outcomes


@pytest.mark.parametrize(
    ("labels", "images", "message"),
    [
        (torch.full((300,), 12), None, "holds label 12; MNIST's classes are 0 to 9"),
        (torch.zeros(299), None, "holds (299,) labels for the 300 images"),
        (None, torch.zeros(300, 784), "holds an array of shape (300, 784)"),
    ],
)
def test_idx_files_with_wrong_contents_are_named(labels, images, message, tiny_mnist, tmp_path):
    data = tmp_path / "data"
    (data / "MNIST").mkdir(parents=True)
    raw = data / "MNIST" / "raw"
    import shutil

    shutil.copytree(tiny_mnist / "MNIST" / "raw", raw)
    if labels is not None:
        write_idx(raw / "train-labels-idx1-ubyte", labels)
    if images is not None:
        write_idx(raw / "train-images-idx3-ubyte", images)
    from dlcourse.infrastructure.errors import UserError

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_run(compose_config(quick_overrides(data)), tmp_path / "run")


def test_an_idx_file_with_no_dimensions_is_named(tiny_mnist, tmp_path):
    import shutil

    from dlcourse.infrastructure.errors import UserError

    raw = tmp_path / "data" / "MNIST" / "raw"
    shutil.copytree(tiny_mnist / "MNIST" / "raw", raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(
        UserError,
        match="t10k-labels-idx1-ubyte is not an IDX file of unsigned bytes with at least one",
    ):
        train_run(compose_config(quick_overrides(tmp_path / "data")), tmp_path / "run")


def test_inpainting_predict_keeps_the_photo_size_and_colours(
    workspace, tmp_path, monkeypatch, capsys
):
    output = tmp_path / "filled.png"
    argv = [
        str(workspace["inpainter"]),
        str(workspace["root"] / "photo.png"),
        "--box",
        "5,5,10,10",
        "--output",
        str(output),
    ]
    status, printed = call("dlcourse-predict", argv, monkeypatch, capsys)
    assert status == 0, printed
    with Image.open(output) as filled, Image.open(workspace["root"] / "photo.png") as photo:
        assert filled.size == photo.size and filled.mode == "RGB"
        filled_pixels, photo_pixels = filled.load(), photo.load()
        assert (
            filled_pixels[0, 0] == photo_pixels[0, 0] == (200, 10, 10)
        )  # outside the hole: unchanged
        assert filled_pixels[30, 20] == (200, 10, 10)


def test_an_inpainting_folder_with_two_files_of_one_name_is_refused(tmp_path):
    from helpers import make_folder

    from dlcourse.data.inpainting_folder import inpainting_folder
    from dlcourse.infrastructure.errors import UserError

    folder = make_folder(tmp_path / "pairs")
    Image.new("L", (28, 28)).save(folder / "masked" / "img03.jpg")
    with pytest.raises(UserError, match="holds both img03.jpg and img03.png"):
        inpainting_folder(str(folder))


def test_json_metrics_nan_are_not_failures(tmp_path):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=1\n")
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({"val/acc": float("nan")}))
    (tmp_path / "1" / ".hydra").mkdir(parents=True)
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.1\n")
    (tmp_path / "1" / "metrics.json").write_text(json.dumps({"val/acc": 0.5}))
    markdown = sweep_report(tmp_path, "val/acc", "max")
    assert (
        "1 done, 0 failed" in markdown
        and "failed: None" not in markdown
        and "val/acc=nan" in markdown
    )
