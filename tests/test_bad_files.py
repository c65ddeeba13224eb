"""Bad files and images: one line, or the right pixels.

Each class of bad file below is a corpus generated here (kinds of tensors × places in a
checkpoint, changes to a class folder, image formats × modes × sizes, outputs PIL cannot
write, ...), fed to every command that reads it. A bad file must get exit status 2, exactly one
`error:` line and no traceback, before any work is done (no training step, no inference); a good
one must still work, and a 16-bit image must give the pixels of its 8-bit twin.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import unicodedata
from pathlib import Path

import numpy
import pytest
import torch
from helpers import call, compose_config, make_image_folder, quick_overrides, replaced
from PIL import Image

from dlcourse.commands import predict
from dlcourse.data.image_decoding import decode_image
from dlcourse.infrastructure.errors import printable
from dlcourse.run import train
from dlcourse.trainer import Trainer

# The image-folder run's classes: a name of 255 characters (the most a file system allows), one
# of 201 (over the old limit of 200), and one holding a terminal escape sequence.
LONG, LONGER, ESCAPED = "green" + "-" * 196, "blue" + "_" * 251, "red\x1b[31m"


def settings(data: Path, *extra: str) -> list[str]:
    """A seconds-long CPU run (one epoch unless `extra` says otherwise)."""
    return [*(o for o in quick_overrides(data) if not o.startswith("trainer.epochs")), *extra]


@pytest.fixture(scope="module")
def runs(tiny_mnist, tmp_path_factory) -> dict[str, Path]:
    """What the corpora point at: an MNIST classifier (SGD with momentum, a step schedule), an
    inpainter, a run on an image folder with long and escaped class names, and images."""
    root = tmp_path_factory.mktemp("bad_files")
    mlp = settings(tiny_mnist, "model=mlp", "model.hidden_sizes=[16]", "scheduler=step")
    train(compose_config([*mlp, "trainer.epochs=2"]), root / "mnist")
    inpainter = ["experiment=conv_inpainting", "model.widths=[4,8]", "trainer.epochs=1"]
    train(compose_config([*settings(tiny_mnist), *inpainter]), root / "inpainter")
    folder = make_image_folder(root / "images", train=8, test=3)
    for split in ("train", "test"):
        for old, new in (("blue", LONGER), ("green", LONG), ("red", ESCAPED)):
            (folder / split / old).rename(folder / split / new)
    images = [
        *(o for o in quick_overrides(tiny_mnist, mnist_sizes=False) if "epochs" not in o),
        *("dataset=image_folder", f"dataset.root={folder}", "dataset.image_size=8"),
        *("dataset.num_workers=0", "dataset.batch_size=8", "model=linear", "trainer.epochs=1"),
    ]
    train(compose_config(images), root / "folder")
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 6, 16, 22))  # a stroke: a 1, not a blank page
    digit.save(root / "digit.png")
    return {"root": root, "mnist": root / "mnist", "inpainter": root / "inpainter",
            "folder": root / "folder", "images": folder, "digit": root / "digit.png"}  # fmt: skip


def refusal(status: int, output: str, *expected: str) -> str:
    """'' for exit status 2 with exactly one `error:` line holding every `expected` piece and no
    traceback; else what went wrong."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    one_line = status == 2 and "Traceback" not in output and len(errors) == 1
    if one_line and all(piece in errors[0] for piece in expected):
        return ""
    return f"status {status}, {len(errors)} error lines: {output[-400:]!r}"


@pytest.fixture
def steps(monkeypatch) -> list[int]:
    """A list each training step appends to: a refused resume must leave it empty."""
    taken: list[int] = []
    real_step = Trainer.train_step

    def counted(trainer, batch):
        taken.append(trainer.position.step)
        return real_step(trainer, batch)

    monkeypatch.setattr(Trainer, "train_step", counted)
    return taken


def save_case(checkpoint: dict, folder: Path) -> Path:
    """`checkpoint` as `folder`/checkpoints/last.pt (a run folder of its own to resume)."""
    path = folder / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(checkpoint, path)
    return path


def good_copy(run: Path, folder: Path) -> Path:
    """A copy of `run`'s checkpoints (last.pt and best.pt) in `folder`; its last.pt."""
    shutil.copytree(run / "checkpoints", folder / "checkpoints")
    return folder / "checkpoints" / "last.pt"


def uses(path: Path, runs: dict, data: Path, tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """The three commands that read a classifier's checkpoint, each as (command, arguments)."""
    evaluate = [f"ckpt_path={path}", f"data_dir={data}", "device=cpu"]
    return {
        "eval": ("dlcourse-eval", [*evaluate, f"output_path={tmp_path / 'eval.json'}"]),
        "predict": ("dlcourse-predict", [str(path), str(runs["digit"])]),
        "resume": ("dlcourse-train", [f"resume={path}", "trainer.epochs=3"]),
    }


# --- 1. tensors that are not plain dense ones, anywhere in a checkpoint -----------------------

TENSOR_KINDS = {
    "a meta tensor": lambda t: torch.empty(t.shape, device="meta"),
    "a sparse COO tensor": lambda t: t.to_sparse(),
    "a sparse CSR tensor": lambda t: t.to_sparse_csr() if t.dim() == 2 else None,
    "a quantized tensor": lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8),
    "a nested tensor": lambda t: torch.nested.nested_tensor([t]),
    "an expanded tensor (stride 0)": lambda t: t.flatten()[:1].expand(t.shape),
    "overlapping strides": lambda t: (
        t.flatten().clone().as_strided(t.shape, (1,) * t.dim()) if t.dim() == 2 else None
    ),
    "NaN weights": lambda t: t.clone().index_fill_(0, torch.tensor([0]), math.nan),
    "infinite weights": lambda t: t.clone().index_fill_(0, torch.tensor([0]), -math.inf),
    "complex weights": lambda t: t.to(torch.complex64),
    "integer weights": lambda t: t.round().long(),
    "another shape": lambda t: t[:1].clone(),
}


def test_crafted_tensors_are_refused_by_every_command(
    runs, tiny_mnist, tmp_path, monkeypatch, capsys, steps
):
    monkeypatch.chdir(tmp_path)
    good = torch.load(runs["mnist"] / "checkpoints" / "last.pt", weights_only=True)
    failures, tried = [], 0
    for name, tensor in good["model"].items():
        for kind, make in TENSOR_KINDS.items():
            crafted = make(tensor)
            if crafted is None:  # a kind this tensor cannot have (CSR of a vector)
                continue
            checkpoint = {**good, "model": {**good["model"], name: crafted}}
            path = save_case(checkpoint, tmp_path / f"case{tried}")
            for use, (command, argv) in uses(path, runs, tiny_mnist, tmp_path).items():
                tried += 1
                problem = refusal(*call(command, argv, monkeypatch, capsys), name)
                if problem or steps:
                    failures.append(f"{kind} as {name}, {use}: {problem or 'it trained'}")
    assert tried >= 100 and not failures, "\n".join(failures)
    # The same file, untouched (with its run's best.pt beside it), still works in all three.
    path = good_copy(runs["mnist"], tmp_path / "good")
    for use, (command, argv) in uses(path, runs, tiny_mnist, tmp_path).items():
        status, output = call(command, argv, monkeypatch, capsys)
        assert status == 0, (use, output[-500:])
    assert steps, "the good checkpoint resumed without training"


# --- 2. a training state with the right keys and the wrong contents --------------------------


def state_corpus(good: dict) -> dict[str, tuple[tuple, object]]:
    """(place in the checkpoint, value: DELETE removes it) for each crafted training state."""
    cases: dict[str, tuple[tuple, object]] = {}
    for index in (0, 3):  # the first layer's weight, the last layer's bias
        buffer = good["optimizer"]["state"][index]["momentum_buffer"]
        for what, value in {
            "one element short": buffer.flatten()[:-1].clone(),
            "an extra dimension": buffer[None].clone(),
            "transposed": buffer.T.clone() if buffer.dim() == 2 else buffer[:, None].clone(),
            "a string": "fast",
            "None": None,
            "expanded": buffer.flatten()[:1].expand(buffer.shape),
            "NaN": torch.full_like(buffer, math.nan),
            "integers": buffer.long(),
            "meta": torch.empty(buffer.shape, device="meta"),
            "DELETE": "DELETE",
        }.items():
            cases[f"momentum buffer {index}: {what}"] = (
                ("optimizer", "state", index, "momentum_buffer"), value)  # fmt: skip
    group = good["optimizer"]["param_groups"][0]
    place = ("optimizer", "param_groups", 0)
    cases |= {
        "state of a parameter the model lacks": (("optimizer", "state", 99), {"x": 1}),
        "state of a parameter named by a string": (("optimizer", "state", "0"), {}),
        "the state a list": (("optimizer", "state"), []),
        "lr a string": ((*place, "lr"), "fast"),
        "lr NaN": ((*place, "lr"), math.nan),
        "an extra group setting": ((*place, "flavour"), 1),
        "a group setting missing": ((*place, "momentum"), "DELETE"),
        "parameters in another order": ((*place, "params"), group["params"][::-1]),
        "a parameter twice": ((*place, "params"), [0, 0, 1, 2]),
        "two groups": (("optimizer", "param_groups"), [group, group]),
    }
    for name, value in {"optimizer": 1, "get_lr": 0, "step_size": "x", "last_epoch": "x",
                        "base_lrs": [], "_last_lr": None, "gamma": math.inf}.items():  # fmt: skip
        cases[f"scheduler {name}={value!r}"] = (("scheduler", name), value)
    cases["scheduler last_epoch missing"] = (("scheduler", "last_epoch"), "DELETE")
    cases["a scaler state where none is used"] = (("scaler", "scale"), 65536.0)
    for value in ({}, {"value": "x", "epoch": 1, "metrics": {}}, {"epoch": 1, "metrics": {}},
                  {"value": math.nan, "epoch": 1, "metrics": {}},
                  {"value": 0.5, "epoch": -1, "metrics": {}},
                  {"value": 0.5, "epoch": 1, "metrics": [1]}):  # fmt: skip
        cases[f"best={value}"] = (("best",), value)
    for value in ("abc", {"loss": "x"}, {"loss": torch.zeros(3)}, {"loss": torch.tensor(math.nan)},
                  {1: torch.tensor(0.0)}, {"acc": torch.tensor(True)},
                  {"loss": torch.tensor(0.0).to_sparse()}):  # fmt: skip
        cases[f"epoch_sums={value}"] = (("epoch_sums",), value)
    for value in ([1], [{"epoch": "x"}], "x", [{"train/loss": None}]):
        cases[f"history={value}"] = (("history",), value)
    python = good["rng"]["python"]
    cases |= {
        "rng python a string": (("rng", "python"), "x"),
        "rng python state short": (("rng", "python"), (python[0], python[1][:10], None)),
        "rng python state negative": (("rng", "python"), (python[0], (-1,) * 625, None)),
        "rng torch state short": (("rng", "torch"), good["rng"]["torch"][:10].clone()),
        "rng torch state meta": (("rng", "torch"), torch.empty(5056, device="meta")),
        "rng numpy keys a number": (("rng", "numpy", 1), 5),
        "rng python missing": (("rng", "python"), "DELETE"),
        "rng an extra generator": (("rng", "jax"), 1),
        "epoch_count a string": (("epoch_count",), "x"),
        "step a float": (("step",), 1.5),
    }
    return cases


def test_training_states_with_wrong_contents_are_refused_before_any_step(
    runs, tmp_path, monkeypatch, capsys, steps
):
    monkeypatch.chdir(tmp_path)
    good = torch.load(runs["mnist"] / "checkpoints" / "last.pt", weights_only=True)
    cases = state_corpus(good)
    failures = []
    for index, (case, (place, value)) in enumerate(cases.items()):
        path = save_case(replaced(good, place, value), tmp_path / f"state{index}")
        argv = [f"resume={path}", "trainer.epochs=3"]
        # Refused as a training state that does not fit ("cannot be resumed") or as a tensor
        # dlcourse-train never writes ("refused"): either way one line naming the file.
        problem = refusal(*call("dlcourse-train", argv, monkeypatch, capsys), str(path))
        if problem or steps:
            failures.append(f"{case}: {problem or f'trained {len(steps)} steps'}")
    assert len(cases) >= 60 and not failures, "\n".join(failures)
    path = good_copy(runs["mnist"], tmp_path / "good")
    status, output = call(
        "dlcourse-train", [f"resume={path}", "trainer.epochs=3"], monkeypatch, capsys
    )
    assert status == 0 and steps, output[-500:]


# --- 3. class folders renamed, added or removed after training --------------------------------


def folder_changes(classes: list[str]) -> dict[str, tuple[str, callable]]:
    """(a piece of the message, a change to a copy of the folder) for each change."""

    def rename(old: str, new: str):
        return lambda root: [(root / s / old).rename(root / s / new) for s in ("train", "test")]

    def add(name: str):
        return lambda root: [shutil.copytree(root / s / classes[0], root / s / name)
                             for s in ("train", "test")]  # fmt: skip

    def remove(name: str):
        return lambda root: [shutil.rmtree(root / s / name) for s in ("train", "test")]

    changes = {f"rename {old[:8]!r}": ("new 'zebra'", rename(old, "zebra")) for old in classes}
    changes |= {
        # At most 255 characters, as a file system allows (one class name is that long).
        f"rename {old[:8]!r} in order": ("new 'a", rename(old, ("a" + old)[:255]))
        for old in classes
    }
    changes["add a class"] = ("new 'yak'", add("yak"))
    changes["add a class first"] = ("new 'aardvark'", add("aardvark"))
    changes |= {f"remove {name[:8]!r}": ("missing", remove(name)) for name in classes}
    return changes


def test_class_folders_changed_after_training_are_named_by_eval_and_resume(
    runs, tmp_path, monkeypatch, capsys, steps
):
    monkeypatch.chdir(tmp_path)
    run, images = runs["folder"], runs["images"]
    before = sorted(p.name for p in run.rglob("*"))
    classes = sorted(p.name for p in (images / "train").iterdir())
    failures = []
    for index, (change, (expected, apply)) in enumerate(folder_changes(classes).items()):
        changed = shutil.copytree(images, tmp_path / f"images{index}")
        apply(changed)
        for command, argv in (
            ("dlcourse-eval", [f"ckpt_path={run}", f"root={changed}", "device=cpu",
                               f"output_path={tmp_path / 'eval.json'}"]),
            ("dlcourse-train", [f"resume={run}", f"dataset.root={changed}", "trainer.epochs=2"]),
        ):  # fmt: skip
            output = call(command, argv, monkeypatch, capsys)
            problem = refusal(*output, "holds other classes than", expected)
            if problem or steps:
                failures.append(f"{change}, {command}: {problem or 'it trained'}")
    assert len(failures) == 0 and index >= 8, "\n".join(failures)
    assert sorted(p.name for p in run.rglob("*")) == before  # refused before writing anything
    # The same classes in another place still evaluate as before, and resume.
    moved = shutil.copytree(images, tmp_path / "moved")
    argv = [f"ckpt_path={run}", f"root={moved}", "device=cpu", f"output_path={tmp_path / 'e.json'}"]
    status, output = call("dlcourse-eval", argv, monkeypatch, capsys)
    expected = json.loads((run / "metrics.json").read_text())["test/acc"]
    assert status == 0 and json.loads((tmp_path / "e.json").read_text())["test/acc"] == expected
    branch = shutil.copytree(run, tmp_path / "branch")
    argv = [f"resume={branch}", f"dataset.root={moved}", "trainer.epochs=2"]
    status, output = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0 and steps, output[-500:]


# --- 4. class names as long as a file system allows --------------------------------------------


def test_class_names_that_trained_are_accepted_and_longer_ones_refused(
    runs, tiny_mnist, tmp_path, monkeypatch, capsys
):
    run, test_image = runs["folder"], next((runs["images"] / "test" / LONGER).iterdir())
    argv = [f"ckpt_path={run}", "device=cpu", f"output_path={tmp_path / 'eval.json'}"]
    status, output = call("dlcourse-eval", argv, monkeypatch, capsys)
    assert status == 0, output[-500:]
    status, output = call("dlcourse-predict", [str(run), str(test_image)], monkeypatch, capsys)
    assert status == 0 and LONG in output and LONGER in output, output[-500:]
    good = torch.load(runs["mnist"] / "checkpoints" / "best.pt", weights_only=True)
    failures = []
    for length in (1, 199, 200, 201, 254, 255, 256, 300, 10_000):
        names = [f"{digit}" + "x" * (length - 1) for digit in range(10)]
        path = tmp_path / f"names{length}.pt"
        torch.save({**good, "class_names": names}, path)
        for use, (command, argv) in uses(path, runs, tiny_mnist, tmp_path).items():
            if use == "resume":
                continue  # resume reads the class names from the folder, not the file
            status, output = call(command, argv, monkeypatch, capsys)
            problem = refusal(status, output, "class_names that are not a list of names")
            if (length <= 255 and status != 0) or (length > 255 and problem):
                failures.append(f"{length} characters, {use}: {status} {output[-300:]!r}")
    assert not failures, "\n".join(failures)


# --- 5. 16- and 32-bit grayscale images --------------------------------------------------------


def picture() -> numpy.ndarray:
    """An 8-bit grayscale picture holding every level 0 ... 255, and a bright stroke."""
    pixels = numpy.arange(32 * 32, dtype=numpy.int64).reshape(32, 32) % 256
    pixels[4:28, 14:18] = 255
    return pixels.astype(numpy.uint8)


def deep_twins(folder: Path) -> dict[str, Path]:
    """The same picture as 8-bit PNG and in each deep format PIL reads (PNG and TIFF "I;16",
    TIFF "I" with 16- and with 32-bit values, 16-bit PGM)."""
    folder.mkdir(parents=True, exist_ok=True)
    eight = picture()
    sixteen = eight.astype(numpy.uint16) * 257  # 255 → 65535: the same levels
    thirty_two = (eight.astype(numpy.float64) * ((2**31 - 1) / 255)).round().astype(numpy.int32)
    files = {"8-bit PNG": (Image.fromarray(eight), "png")}
    files |= {
        "16-bit PNG (I;16)": (Image.fromarray(sixteen), "png"),
        "16-bit TIFF (I;16)": (Image.fromarray(sixteen), "tif"),
        "16-bit values in a 32-bit TIFF (I)": (Image.fromarray(sixteen.astype(numpy.int32)), "tif"),
        "32-bit TIFF (I)": (Image.fromarray(thirty_two), "tif"),
        "16-bit PGM": (Image.fromarray(sixteen), "pgm"),
    }
    paths = {}
    for index, (name, (image, suffix)) in enumerate(files.items()):
        paths[name] = folder / f"picture{index}.{suffix}"
        image.save(paths[name])
    return paths


def test_deep_grayscale_images_decode_to_the_pixels_of_their_8_bit_twin(tmp_path):
    twins = deep_twins(tmp_path)
    modes = {Image.open(path).mode for path in twins.values()}
    assert {"I;16", "I"} <= {mode[:4] if mode.startswith("I;16") else mode for mode in modes}
    failures, tried = [], 0
    for name, path in twins.items():
        for mode in ("L", "RGB"):
            for size in (None, 12, (20, 9)):
                expected = decode_image(twins["8-bit PNG"], mode, size)
                decoded = decode_image(path, mode, size)
                tried += 1
                if not torch.equal(decoded, expected):
                    failures.append(f"{name}, {mode}, {size}: mean {decoded.float().mean():.1f}")
    assert tried == 36 and not failures, "\n".join(failures)


def test_deep_grayscale_images_give_the_same_predictions_inputs_and_training_batches(
    runs, tmp_path, monkeypatch, capsys
):
    twins = deep_twins(tmp_path / "twins")
    answers, inputs, filled = {}, {}, {}
    for name, path in twins.items():
        argv = [str(runs["mnist"]), str(path), "--json", "--save-input"]
        status, output = call("dlcourse-predict", argv, monkeypatch, capsys)
        assert status == 0, (name, output[-400:])
        answers[name] = [result["top"] for result in json.loads(output)]
        inputs[name] = numpy.array(Image.open(path.with_name(f"{path.stem}_input.png")))
        out = tmp_path / f"filled{len(filled)}.png"
        argv = [str(runs["inpainter"]), str(path), "--box", "8,8,10,10", "--output", str(out)]
        status, output = call("dlcourse-predict", argv, monkeypatch, capsys)
        assert status == 0, (name, output[-400:])
        filled[name] = numpy.array(Image.open(out))
    for name in twins:
        assert answers[name] == answers["8-bit PNG"], name
        assert numpy.array_equal(inputs[name], inputs["8-bit PNG"]), name
        assert numpy.array_equal(filled[name], filled["8-bit PNG"]), name
    assert numpy.array_equal(filled["8-bit PNG"][:8], picture()[:8])  # outside the hole: kept
    # Training on a folder of 16-bit PNGs sees the batches of the same folder in 8 bits.
    from dlcourse.data.image_folder import image_folder

    batches = {}
    for bits in (8, 16):
        root = make_image_folder(tmp_path / f"folder{bits}", train=6, test=2)
        for image_path in root.rglob("*.*g"):
            gray = numpy.array(Image.open(image_path).convert("L"))
            image_path.unlink()
            deep = gray.astype(numpy.uint16) * 257 if bits == 16 else gray
            Image.fromarray(deep).save(image_path.with_suffix(".png"))
        data = image_folder(str(root), channels=1, image_size=16, num_workers=0, batch_size=8)
        batches[bits] = (next(iter(data.train))[0], data.found)
    assert batches[16][1] == batches[8][1]  # the measured mean and std
    assert torch.equal(batches[16][0], batches[8][0])


# --- 6. predict's outputs and inputs -----------------------------------------------------------


@pytest.fixture
def inference(monkeypatch) -> list[int]:
    """A list each forward pass of a model dlcourse-predict loaded appends to."""
    passes: list[int] = []
    real_load = predict.load_model

    def load(path, config_dirs=None):
        model, checkpoint = real_load(path, config_dirs)
        model.register_forward_hook(lambda *args: passes.append(1))
        return model, checkpoint

    monkeypatch.setattr(predict, "load_model", load)
    return passes


def unwritable_outputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """(--output, a piece of the message) for each output PIL cannot write: every format it
    reads but cannot write, unknown suffixes, no suffix, folders, a missing folder."""
    Image.init()
    read_only = sorted(
        suffix for suffix, name in Image.registered_extensions().items() if name not in Image.SAVE
    )
    outputs = {suffix: (folder / f"x{suffix}", "PIL cannot write") for suffix in read_only}
    for suffix in (".xyz", ".txt", ".pt", ".PNG~", ""):
        outputs[suffix or "no suffix"] = (folder / f"x{suffix}", "PIL cannot write")
    (folder / "a_folder").mkdir()
    (folder / "looks_like.png").mkdir()
    outputs["a folder"] = (folder / "a_folder", "is a folder")
    outputs["a folder named .png"] = (folder / "looks_like.png", "is a folder")
    outputs["a missing folder"] = (folder / "nowhere" / "x.png", "does not exist")
    return outputs


def test_predict_outputs_it_cannot_write_are_refused_before_inference(
    runs, tmp_path, monkeypatch, capsys, inference
):
    outputs = unwritable_outputs(tmp_path)
    failures = []
    for name, (output, expected) in outputs.items():
        argv = [str(runs["inpainter"]), str(runs["digit"]), "--box", "1,1,5,5", "--output"]
        problem = refusal(*call("dlcourse-predict", [*argv, str(output)], monkeypatch, capsys),
                          expected)  # fmt: skip
        if problem or inference or (output.suffix and output.is_file()):
            failures.append(f"{name}: {problem or 'it ran the model'}")
    assert len(outputs) >= 20 and not failures, "\n".join(failures)
    written = tmp_path / "filled.jpg"  # a format PIL writes still works
    argv = [str(runs["inpainter"]), str(runs["digit"]), "--box", "1,1,5,5", "--output"]
    status, output = call("dlcourse-predict", [*argv, str(written)], monkeypatch, capsys)
    assert status == 0 and Image.open(written).format == "JPEG", output


def test_predict_reads_regular_files_only(runs, tmp_path, monkeypatch, capsys, inference):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "folder.png").mkdir()
    others = {"a FIFO": fifo, "a folder": tmp_path / "folder.png", "a device": Path("/dev/null")}
    previous = signal.signal(signal.SIGALRM, lambda *args: pytest.fail("predict hung on a FIFO"))
    signal.alarm(60)
    failures = []
    try:
        for name, other in others.items():
            for argv in (
                [str(runs["mnist"]), str(other)],
                [str(runs["mnist"]), str(runs["digit"]), str(other)],
                [str(runs["inpainter"]), str(other), "--box", "1,1,5,5"],
                [str(runs["inpainter"]), str(runs["digit"]), "--mask", str(other)],
            ):
                problem = refusal(*call("dlcourse-predict", argv, monkeypatch, capsys), str(other))
                if problem or (inference and "--mask" not in argv):
                    failures.append(f"{name}: {' '.join(argv[1:])}: {problem or 'inference'}")
                inference.clear()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not failures, "\n".join(failures)


def test_derived_names_never_replace_a_file_this_call_did_not_write(
    runs, tmp_path, monkeypatch, capsys, inference
):
    shutil.copy(runs["digit"], tmp_path / "a.png")
    shutil.copy(runs["digit"], tmp_path / "a.jpg")
    shutil.copy(runs["digit"], tmp_path / "b.png")
    precious = {tmp_path / "b_input.png": b"precious", tmp_path / "b_filled.png": b"mine"}
    for path, data in precious.items():
        path.write_bytes(data)
    mnist, inpainter = str(runs["mnist"]), str(runs["inpainter"])
    cases = [
        ([mnist, str(tmp_path / "b.png"), "--save-input"], "would replace"),
        ([mnist, str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--save-input"], "b_input.png"),
        ([mnist, str(tmp_path / "a.png"), str(tmp_path / "a.jpg"), "--save-input"], "for both"),
        ([inpainter, str(tmp_path / "b.png"), "--box", "1,1,5,5"], "already exists"),
    ]
    failures = []
    for argv, expected in cases:
        problem = refusal(*call("dlcourse-predict", argv, monkeypatch, capsys), expected)
        if problem or inference:
            failures.append(f"{' '.join(argv[1:])}: {problem or 'inference'}")
    assert not failures, "\n".join(failures)
    assert all(path.read_bytes() == data for path, data in precious.items())
    assert not (tmp_path / "a_input.png").exists()  # refused before the first image was saved
    # Named with --output, a file is the user's to replace; fresh names are written.
    argv = [inpainter, str(tmp_path / "b.png"), "--box", "1,1,5,5", "--output"]
    status, output = call("dlcourse-predict", [*argv, str(tmp_path / "b_filled.png")],
                          monkeypatch, capsys)  # fmt: skip
    assert status == 0 and Image.open(tmp_path / "b_filled.png").size == (28, 28), output
    argv = [
        mnist,
        str(tmp_path / "b.png"),
        "--save-input",
        "--output",
        str(tmp_path / "b_input.png"),
    ]
    status, output = call("dlcourse-predict", argv, monkeypatch, capsys)
    assert status == 0 and Image.open(tmp_path / "b_input.png").size == (28, 28), output
    status, output = call("dlcourse-predict", [mnist, str(tmp_path / "a.png"), "--save-input"],
                          monkeypatch, capsys)  # fmt: skip
    assert status == 0 and (tmp_path / "a_input.png").is_file(), output


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` made read-only, also for root (chattr +i), and writable again afterwards."""
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(
        ["chattr", "+i", str(folder)], capture_output=True
    ).returncode == 0  # fmt: skip
    try:
        if os.geteuid() == 0 and not immutable:
            pytest.skip("running as root where chattr +i is not allowed: nothing is read-only")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_read_only_output_folders_are_one_line_before_inference(
    runs, tmp_path, monkeypatch, capsys, inference
):
    folder = tmp_path / "locked"
    folder.mkdir()
    shutil.copy(runs["digit"], folder / "d.png")
    mnist, inpainter, image = str(runs["mnist"]), str(runs["inpainter"]), str(folder / "d.png")
    cases = {
        "--save-input": [mnist, image, "--save-input"],
        "the inpainting output": [inpainter, image, "--box", "1,1,5,5"],
        "--output": [inpainter, str(runs["digit"]), "--box", "1,1,5,5", "--output",
                     str(folder / "f.png")],
    }  # fmt: skip
    failures = []
    with read_only(folder):
        for name, argv in cases.items():
            problem = refusal(*call("dlcourse-predict", argv, monkeypatch, capsys), str(folder))
            if problem or inference:
                failures.append(f"{name}: {problem or 'inference'}")
    assert not failures, "\n".join(failures)
    assert sorted(p.name for p in folder.iterdir()) == ["d.png"]


# --- 7. gradcheck batches beyond memory --------------------------------------------------------


def test_gradcheck_batches_beyond_memory_are_one_line(monkeypatch, capsys):
    failures, tried = [], 0
    for model in ("linear", "mlp", "cnn"):
        for batch_size, shape in ((10**8, [1, 28, 28]), (10**12, [1, 28, 28]),
                                  (2**62, [1, 28, 28]), (10**5, [3, 512, 512])):  # fmt: skip
            argv = [f"model={model}", f"batch_size={batch_size}", f"input_shape={shape}"]
            tried += 1
            problem = refusal(*call("dlcourse-gradcheck", argv, monkeypatch, capsys),
                              f"batch_size={batch_size} needs", "lower batch_size")  # fmt: skip
            if problem:
                failures.append(f"{' '.join(argv)}: {problem}")
    assert tried == 12 and not failures, "\n".join(failures)
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "0":
        # Past the estimate (say it misjudged), the allocator's own failure is one line too.
        from dlcourse.infrastructure import runtime

        monkeypatch.setattr(runtime, "available_memory", lambda: math.inf)
        status, output = call("dlcourse-gradcheck", ["batch_size=1000000000"], monkeypatch, capsys)
        assert not refusal(status, output, "lower batch_size"), output[-400:]
    status, output = call(
        "dlcourse-gradcheck", ["model=linear", "batch_size=2"], monkeypatch, capsys
    )
    assert status == 0 and "PASS" in output, output[-400:]


# --- 8. names from files, printed to a terminal ----------------------------------------------


def control_names() -> list[str]:
    """Class names holding each C0 and C1 control character, escape sequences (colours, cursor
    moves, window titles, a terminal reset), line breaks and bidirectional overrides."""
    controls = [chr(c) for c in (*range(32), *range(127, 160))]
    sequences = ["\x1b[31m", "\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x1b]8;;http://x\x1b\\",
                 "\x1bc", "\x9b1A", "\u202e", "\u2066", "\u2028", "\ufeff", "\udcff"]  # fmt: skip
    return [f"cat{piece}dog" for piece in controls + sequences]


def test_names_from_files_are_printed_without_control_characters(
    runs, tmp_path, monkeypatch, capsys
):
    names = control_names()
    # A terminal reads ESC or CSI with the letter after it as one sequence (ESC d), and an OSC
    # string up to its end: printable drops them as the terminal would have consumed them.
    swallowed = {"cat\x1bdog": "catog", "cat\x9bdog": "catog", "cat\x9ddog": "cat"}
    for name in names:
        shown = printable(name)
        assert shown == swallowed.get(name, "catdog"), repr(name)
        assert not any(unicodedata.category(c)[0] == "C" for c in shown), repr(name)
    good = torch.load(runs["mnist"] / "checkpoints" / "best.pt", weights_only=True)
    for start in range(0, len(names), 10):  # ten classes a checkpoint
        path = tmp_path / f"names{start}.pt"
        torch.save({**good, "class_names": (names[start : start + 10] + ["x"] * 10)[:10]}, path)
        argv = [str(path), str(runs["digit"]), "--top-k", "10"]
        status, output = call("dlcourse-predict", argv, monkeypatch, capsys)
        assert status == 0 and len(output.splitlines()) == 1, repr(output)
        assert not any(unicodedata.category(c)[0] == "C" for c in output.rstrip("\n")), repr(output)
    # A class folder named with an escape sequence: predict shows the name without it.
    test_image = next((runs["images"] / "test" / ESCAPED).iterdir())
    status, output = call("dlcourse-predict", [str(runs["folder"]), str(test_image)], monkeypatch,
                          capsys)  # fmt: skip
    assert status == 0 and "red (" in output and "\x1b" not in output, repr(output)
