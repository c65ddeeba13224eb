"""A run in an MLflow tracking store (logger=mlflow), written with MLflow's own client.

    dlcourse-train logger=[tensorboard,mlflow]                  # outputs/mlflow.db, every run
    dlcourse-train logger=mlflow logger.mlflow.tracking_uri=http://<host>:5000

Params: the run's settings (those the HParams tab shows); metrics: every scalar at its step,
under the names metrics.json uses (`train/loss`, `val/acc`); artifacts, at the end: the run
folder's pictures and model.safetensors. The MLflow run is named after the run folder, and its id
is kept in the folder (mlflow.json), so a resumed run goes on in the same MLflow run. MLflow's
telemetry is off: no run sends anything anywhere but the store it is given.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.loggers import NullLogger
from dlcourse.infrastructure.run_folder import MLFLOW_ARTIFACTS, MLFLOW_RUN, MLFLOW_STORE, WEIGHTS


class MLflowLogger(NullLogger):
    """Scalars, settings and the finished run's files to MLflow (pictures go as files, at the
    end: `log_files`)."""

    def __init__(
        self,
        log_dir: str | Path,
        tracking_uri: str | None,
        experiment_name: str,
        output_root: str | Path,
    ) -> None:
        """`tracking_uri` None: sqlite:///<output_root>/mlflow.db."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network at run time
        os.environ.setdefault("DO_NOT_TRACK", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError(
                'logger=mlflow needs MLflow: pip install -e ".[mlflow]" (or mlflow itself)'
            ) from None
        self.log_dir = Path(log_dir)
        root = Path(output_root).resolve()
        self.client = MlflowClient(tracking_uri=tracking_uri or f"sqlite:///{root / MLFLOW_STORE}")
        artifacts = None if tracking_uri else (root / MLFLOW_ARTIFACTS).as_uri()
        experiment_id = self.experiment(experiment_name, artifacts)
        self.finished = False  # until the run's results are in (log_hparams)
        run_id = earlier_run(self.log_dir / MLFLOW_RUN)
        self.run_id = run_id if self.has_run(run_id) else self.new_run(experiment_id)

    def experiment(self, name: str, artifacts: str | None) -> str:
        """The experiment's id, made if new (two parallel jobs may both try: one makes it)."""
        from mlflow.exceptions import MlflowException

        for _ in range(2):
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            try:
                return self.client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # made meanwhile by another job: read it again
                continue
        raise UserError(f"logger=mlflow: cannot make or read the experiment {name!r}")

    def has_run(self, run_id: str | None) -> bool:
        """Whether this store holds the run (a resumed run may be given another store)."""
        from mlflow.exceptions import MlflowException

        if run_id is None:
            return False
        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def new_run(self, experiment_id: str) -> str:
        tags = {"dlcourse.run_folder": str(self.log_dir.resolve())}
        run = self.client.create_run(experiment_id, run_name=self.log_dir.name, tags=tags)
        record = json.dumps({"run_id": run.info.run_id, "experiment_id": experiment_id})
        write_file(self.log_dir / MLFLOW_RUN, record + "\n", root=self.log_dir)
        return run.info.run_id

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, float(value), now, step) for name, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_hparams(
        self, hparams: Mapping[str, object], metrics: Mapping[str, float], step: int
    ) -> None:
        """The run's settings as params (a resumed run's are already there: kept as they are)."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        params = [Param(k, str(v)) for k, v in hparams.items() if k not in logged]
        self.client.log_batch(self.run_id, params=params)
        self.finished = True  # the run logs its settings once it has its results

    def log_files(self, folder: Path) -> None:
        """The run folder's pictures and weights, as the run's artifacts."""
        for path in sorted(folder.glob("*.png")) + [folder / WEIGHTS]:
            if path.is_file() and not path.is_symlink():
                self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        """FINISHED, or FAILED for a run that stopped before its results (a stopped run that
        resumes goes on in the same MLflow run; its steps after the checkpoint are logged again,
        and MLflow keeps both)."""
        self.client.set_terminated(self.run_id, "FINISHED" if self.finished else "FAILED")


def earlier_run(record: Path) -> str | None:
    """The MLflow run id a resumed run's folder names (data: an id of 32 hex digits, or none)."""
    if not record.is_file() or record.is_symlink():
        return None
    try:
        run_id = json.loads(record.read_text()).get("run_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return run_id if isinstance(run_id, str) and re.fullmatch(r"[0-9a-f]{32}", run_id) else None
