"""dlcourse-export (issue #27, point 5): a run's model as ONNX (run here in onnxruntime), as a
torch.export program (.pt2), and as safetensors loaded into the model in three lines, each
compared with PyTorch's outputs on the run's test images."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config, quick_overrides, run_command

from dlcourse.infrastructure.config import build


@pytest.fixture(scope="module")
def runs(tiny_mnist, tmp_path_factory) -> dict:
    """A CNN classifier and an inpainting model (two inputs: masked image and mask)."""
    root = tmp_path_factory.mktemp("export")
    made = {}
    for name, overrides in (
        ("cnn", ["model=cnn"]),
        ("inpainting", ["experiment=mlp_inpainting", "model.hidden_sizes=[32]"]),
    ):
        command = ["dlcourse-train", *overrides, f"hydra.run.dir={root / name}"]
        result = run_command([*command, *quick_overrides(tiny_mnist)], root, tiny_mnist)
        assert result.returncode == 0, result.stderr
        cfg = compose_config([*overrides, *quick_overrides(tiny_mnist)])
        data = build(cfg, "dataset", device="cpu")
        batch = next(iter(data.test))
        made[name] = (root / name, (batch[0][:12], *(x[:12] for x in batch[2:])))
    return made


def export(run, form: str, tiny_mnist, tmp_path) -> str:
    command = ["dlcourse-export", str(run), "--format", form, "--data-dir", str(tiny_mnist)]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    assert "differ from PyTorch's by at most" in result.stdout
    return result.stdout


def pytorch_outputs(run, inputs) -> torch.Tensor:
    from dlcourse.infrastructure.checkpoint import model_from_checkpoint, open_checkpoint

    path, checkpoint, cfg = open_checkpoint(run, config_dirs=[])
    with torch.no_grad():
        return model_from_checkpoint(checkpoint, cfg, path).eval()(*inputs)


@pytest.mark.parametrize("kind", ["cnn", "inpainting"])
def test_onnx_runs_in_onnxruntime_as_the_model_does(kind, runs, tiny_mnist, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason='pip install -e ".[export]"')
    run, inputs = runs[kind]
    export(run, "onnx", tiny_mnist, tmp_path)
    session = onnxruntime.InferenceSession(str(run / "model.onnx"))
    assert [i.shape[0] for i in session.get_inputs()] == ["batch"] * len(inputs)  # any size
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    outputs = torch.from_numpy(session.run(None, feed)[0])
    torch.testing.assert_close(outputs, pytorch_outputs(run, inputs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["cnn", "inpainting"])
def test_a_torch_export_program_loads_and_runs_as_the_model_does(kind, runs, tiny_mnist, tmp_path):
    run, inputs = runs[kind]
    export(run, "torch-export", tiny_mnist, tmp_path)
    program = torch.export.load(run / "model.pt2").module()  # the file this test's run wrote
    with torch.no_grad():
        outputs = program(*inputs)
    torch.testing.assert_close(outputs, pytorch_outputs(run, inputs))
    assert (run / "model.pt2").stat().st_size < 4 * (run / "model.safetensors").stat().st_size


def test_safetensors_loads_into_the_model_in_three_lines_as_the_readme_shows(runs):
    run, inputs = runs["cnn"]
    import yaml

    model_config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["model"]
    assert model_config["_target_"] == "dlcourse.models.CNN"  # what the README's lines build
    # README, "Weights out": the settings of .hydra/config.yaml's model, the data's sizes
    from safetensors.torch import load_file

    from dlcourse.models import CNN

    settings = {k: v for k, v in model_config.items() if k != "_target_" and v is not None}
    model = CNN(**settings, in_channels=1, image_size=28, num_classes=10)
    model.load_state_dict(load_file(run / "model.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(*inputs), pytorch_outputs(run, inputs))


def test_a_safetensors_export_never_writes_over_the_runs_own_weights(runs, tiny_mnist, tmp_path):
    run, _ = runs["cnn"]
    before = (run / "model.safetensors").read_bytes()
    out = export(run, "safetensors", tiny_mnist, tmp_path)
    assert "best.safetensors" in out and (run / "best.safetensors").is_file()
    command = ["dlcourse-export", str(run), "--format", "safetensors", "--output"]
    refused = run_command([*command, str(run / "model.safetensors")], tmp_path, tiny_mnist)
    assert refused.returncode == 2 and "a run's own weights" in refused.stderr
    assert (run / "model.safetensors").read_bytes() == before
