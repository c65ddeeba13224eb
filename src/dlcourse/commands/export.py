"""Export a run's model for use outside dlcourse: ONNX, torch.export, or safetensors.

    dlcourse-export outputs/runs/<run> --format onnx           # <run>/model.onnx
    dlcourse-export outputs/runs/<run> --format torch-export   # <run>/model.pt2
    dlcourse-export outputs/runs/<run> --format safetensors --output weights.safetensors

The model is the run's best (best.pt, else last.pt), built from its checked config (your own
model: give its --config-dir, as to dlcourse-predict). Each export is checked on the run's first
test batch, read as dlcourse-eval reads it (--data-dir, else $DLCOURSE_DATA_DIR, else the folder
the checkpoint names): the exported model runs (ONNX in onnxruntime, .pt2 through
torch.export.load, safetensors loaded back into the model) and its outputs are compared with
PyTorch's; the largest difference is printed, and one beyond TOLERANCE of the outputs' scale is
an error. The batch size stays free (a dynamic dimension) in ONNX and .pt2.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from dlcourse.infrastructure.checkpoint import (
    export_safetensors,
    model_from_checkpoint,
    open_checkpoint,
)
from dlcourse.infrastructure.config import DATA_LOCATIONS, build
from dlcourse.infrastructure.errors import UserError, exit_on_user_error
from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.run_folder import BEST, check_output, owning_run
from dlcourse.infrastructure.stored_config import point_at_data

# Where each goes in the run folder; safetensors after its checkpoint (best.safetensors): the
# run's own model.safetensors is what training exported, and is left as it is.
FORMATS = {"onnx": "model.onnx", "torch-export": "model.pt2", "safetensors": "{stem}.safetensors"}
TRACED = 8  # examples the export traces the model with (a .pt2 keeps them); all are compared
TOLERANCE = 1e-4  # of the outputs' largest magnitude: float32 kernels differ in the last bits


def test_batch(cfg) -> tuple[torch.Tensor, ...]:
    """The model's inputs in the run's first test batch: (images,) or (masked, mask)."""
    batch = next(iter(build(cfg, "dataset", device=torch.device("cpu")).test))
    return (batch[0], *batch[2:])  # (inputs, targets, *context): the targets are not inputs


def to_onnx(model: nn.Module, inputs: tuple[torch.Tensor, ...], cfg) -> tuple[bytes, Callable]:
    """The ONNX file's bytes, and the file run in onnxruntime (a function of the inputs)."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError('--format onnx needs pip install -e ".[export]" (onnxruntime)') from None
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in inputs)
    program = torch.onnx.export(model, inputs, dynamo=True, dynamic_shapes=dynamic, verbose=False)
    with tempfile.TemporaryDirectory() as scratch:
        program.save(f"{scratch}/model.onnx")
        data = Path(f"{scratch}/model.onnx").read_bytes()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def run(batch_inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), batch_inputs)}
        return torch.from_numpy(session.run(None, feed)[0])

    return data, run


def to_torch_export(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], cfg
) -> tuple[bytes, Callable]:
    """The .pt2 archive's bytes, and the program loaded back from them (a function)."""
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    loaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()  # what this command wrote

    def run(batch_inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return loaded(*batch_inputs)

    return buffer.getvalue(), run


def to_safetensors(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], cfg
) -> tuple[bytes, Callable]:
    """The safetensors file's bytes (the run's config in its metadata, as model.safetensors), and
    a new model with the weights loaded back from them."""
    from safetensors.torch import load

    with tempfile.TemporaryDirectory() as scratch:
        export_safetensors(model, OmegaConf.to_container(cfg.model), Path(scratch) / "w")
        data = (Path(scratch) / "w").read_bytes()
    reloaded = build(cfg, "model").eval()
    reloaded.load_state_dict(load(data))

    def run(batch_inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return reloaded(*batch_inputs)

    return data, run


def check(expected: torch.Tensor, exported: torch.Tensor, what: str) -> float:
    """The largest difference between PyTorch's outputs and the export's; an error beyond
    TOLERANCE of their scale."""
    difference = (expected.float() - exported.float()).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    if not difference <= TOLERANCE * scale:
        raise UserError(
            f"the {what} export's outputs differ from PyTorch's by up to {difference:.3g} on the "
            f"test batch (more than {TOLERANCE:g} × {scale:.3g}): it was not written"
        )
    return difference


def export(
    run: str | Path,
    format: str,
    output: str | Path | None = None,
    data_dir: str | None = None,
    config_dirs: list[Path] | None = None,
) -> tuple[Path, float]:
    """Write the run's model in `format`, checked; where it went, and the largest difference."""
    path, checkpoint, cfg = open_checkpoint(run, BEST, config_dirs or [])
    own_run = owning_run(path)
    name = FORMATS[format].format(stem=path.stem)
    target = Path(output) if output else (own_run or path.parent) / name
    point_at_data(cfg.dataset, data_dir, None)
    data_folders = [Path(cfg.dataset[k]) for k in DATA_LOCATIONS if cfg.dataset.get(k)]
    # A new file of its kind, or this command's own earlier export; never other weights.
    kind = Path(name).suffix if not target.exists() or target.name == name else ".json"
    check_output(target, [path, *data_folders], own_run, "--output", writes=kind)
    model = model_from_checkpoint(checkpoint, cfg, path).eval()
    inputs = test_batch(cfg)
    with torch.no_grad():
        expected = model(*inputs)
    make = {"onnx": to_onnx, "torch-export": to_torch_export, "safetensors": to_safetensors}
    traced = tuple(x[:TRACED].clone() for x in inputs)  # a view would keep the whole batch
    data, program = make[format](model, traced, cfg)
    difference = check(expected, program(inputs), format)  # before anything is written
    write_file(target, data, root=own_run)
    return target, difference


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dlcourse-export", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder (its best.pt, else last.pt), or a checkpoint")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--output", help="the file to write (default: in the run folder)")
    parser.add_argument("--data-dir", help="where the run's data is, for the test batch")
    parser.add_argument("--config-dir", action="append", type=Path, help="your own configs")
    args = parser.parse_args(argv)
    target, difference = export(args.run, args.format, args.output, args.data_dir, args.config_dir)
    print(f"Wrote {target} ({target.stat().st_size:,} bytes); on the first test batch its outputs")
    print(f"differ from PyTorch's by at most {difference:.2g}")
