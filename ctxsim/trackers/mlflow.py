"""MLflow: one experiment per dataset (``ctxsim-<dataset>``), one MLflow run per ctxsim run, through
``mlflow.tracking.MlflowClient`` on the tracking URI MLflow itself resolves (``MLFLOW_TRACKING_URI``,
else its default). The run's id is kept in ``<run folder>/mlflow_run_id``, so a resumed job appends to
the same MLflow run. The config goes in as params (nested keys joined by dots), per-step losses and
per-epoch retrieval metrics as metrics: MLflow allows no ``@`` in a metric name, so ``R@1`` is
logged as ``R_at_1`` and ``MAP@R`` as ``MAP_at_R``. At the end: ``final/<key>`` metrics, the
selected epoch as a tag, and the run marked FINISHED (FAILED when the job fails)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from ctxsim.files import atomic_write
from ctxsim.train.events import Event, metric_points

ID_FILE = "mlflow_run_id"
MAX_PARAM_CHARS = 500  # what every MLflow server accepts for a param value


def mlflow_key(key: str) -> str:
    """A registry metric key as MLflow accepts it (``R@1`` -> ``R_at_1``)."""
    return key.replace("@", "_at_")


class MLflowSink:
    def __init__(self, config: dict[str, Any], run_dir: Optional[Path]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        from ctxsim.report.export import flatten

        if run_dir is None:
            raise ValueError("MLflow keeps its run id in the run folder, and this run has none")
        self.client = MlflowClient()
        name = f"ctxsim-{config.get('dataset')}"
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        id_file = Path(run_dir) / ID_FILE
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"ctxsim.dataset": str(config.get("dataset")), "ctxsim.loss": str(config.get("loss")),
                    "ctxsim.resolution": str(config.get("resolution")), "ctxsim.seed": str(config.get("seed")),
                    "ctxsim.run_dir": str(run_dir)}
            run_name = config.get("name") or (f"{config.get('dataset')}-{config.get('loss')}-{config.get('resolution')}"
                                              f"-seed{config.get('seed')}")
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(flatten(config).items())]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            with atomic_write(id_file, "w") as fh:
                fh.write(self.run_id + "\n")

    def emit(self, event: Event) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, now, st) for k, st, v in metric_points(event)]
        d = event.data
        if event.kind == "done":
            step = int(d.get("epochs") or 0)
            metrics += [Metric(f"final/{mlflow_key(k)}", float(v), now, step)
                        for k, v in (d.get("metrics") or {}).items() if isinstance(v, (int, float))]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        if event.kind == "done":
            if d.get("best_epoch") is not None:
                self.client.set_tag(self.run_id, "ctxsim.selected_epoch", str(d.get("best_epoch")))
            self.client.set_terminated(self.run_id, "FINISHED")
        elif event.kind == "failed":
            self.client.set_terminated(self.run_id, "FAILED")
        elif event.kind == "stopped":  # cancelled or preempted: a resume sets it RUNNING again
            self.client.set_terminated(self.run_id, "KILLED")

    def close(self) -> None:
        """Nothing left open: every way a run ends (done, failed, stopped) already ended the MLflow run."""
