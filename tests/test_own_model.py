"""A researcher's own model, from their own --config-dir (issue #27, point 5): it trains, and
eval, predict and resume accept its checkpoint when given the same --config-dir, as the command
line is trusted; a checkpoint alone still never names code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import BIN, only_run_folder, quick_overrides
from PIL import Image

MODEL = '''
from torch import nn


def tiny_net(input_size: int | None = None, num_classes: int | None = None, hidden: int = 16):
    """A researcher's own classifier: flatten, one hidden layer."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(input_size, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )
'''
CONFIG = """# dlcourse-train --config-dir my_configs model=tiny
_target_: my_models.tiny_net
input_size: null
num_classes: null
hidden: 16
"""


@pytest.fixture
def own_model(tmp_path) -> Path:
    (tmp_path / "my_models.py").write_text(MODEL)
    (tmp_path / "my_configs" / "model").mkdir(parents=True)
    (tmp_path / "my_configs" / "model" / "tiny.yaml").write_text(CONFIG)
    return tmp_path


def run(command: list[str], cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """A command as the researcher runs it, their module importable (PYTHONPATH)."""
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(data_dir), "PYTHONPATH": str(cwd)}
    words = [str(BIN / command[0]), *command[1:]]
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_eval_predict_and_resume_take_your_own_model_given_its_config_dir(own_model, tiny_mnist):
    mine = f"--config-dir={own_model / 'my_configs'}"
    trained = run(["dlcourse-train", mine, "model=tiny", *quick_overrides(tiny_mnist)], own_model,
                  tiny_mnist)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    folder = only_run_folder(own_model / "outputs" / "runs")
    # Without the folder, the checkpoint alone names code dlcourse does not ship: refused.
    refused = run(["dlcourse-eval", f"ckpt_path={folder}"], own_model, tiny_mnist)
    assert refused.returncode == 2 and "my_models.tiny_net" in refused.stderr
    assert "--config-dir" in refused.stderr and "Traceback" not in refused.stderr
    # A folder that holds the checkpoint is no config folder (its runs' records name targets).
    whole = run(["dlcourse-eval", f"--config-dir={own_model}", f"ckpt_path={folder}"], own_model,
                tiny_mnist)  # fmt: skip
    assert whole.returncode == 2 and "holds the checkpoint" in whole.stderr
    evaluated = run(["dlcourse-eval", mine, f"ckpt_path={folder}"], own_model, tiny_mnist)
    assert evaluated.returncode == 0, evaluated.stderr
    Image.new("L", (28, 28), 0).save(own_model / "digit.png")
    predicted = run(
        ["dlcourse-predict", "--config-dir", str(own_model / "my_configs"), str(folder),
         str(own_model / "digit.png")], own_model, tiny_mnist,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    resumed = run(
        ["dlcourse-train", mine, f"resume={folder}", "trainer.epochs=3"], own_model, tiny_mnist
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 3/3" in resumed.stdout + resumed.stderr
