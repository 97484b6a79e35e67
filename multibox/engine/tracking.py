"""Experiment tracking: the Lightning loggers train.loggers names, checked before any work, and the run's
files (config, metrics.json, report, pictures, best checkpoint) handed to MLflow / W&B once training ends.

Lightning's own loggers do the logging (metrics per step and per epoch; the module's hyper-parameters,
i.e. the resolved config, as MLflow params). `tracking.json` in the run folder says which MLflow run or
W&B run directory belongs to it. Prints nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from multibox.config import Config
from multibox.errors import MultiboxError
from multibox.outputs import atomic_write

_EXTRA = {"mlflow": "mlflow", "wandb": "wandb"}
_SKIPPED = {"checkpoints", "tensorboard", "wandb", "mlruns"}  # run-folder entries not sent as artifacts
TRACKING_FILE = "tracking.json"


def require_package(name: str, key: str) -> None:
    """One line naming the extra to install instead of an ImportError traceback deep inside Lightning."""
    if importlib.util.find_spec(name) is None:
        raise MultiboxError(f"{key}: {name} needs the {name} package: pip install 'multibox[{_EXTRA.get(name, name)}]'")


def mlflow_tracking_uri(config: Config) -> str:
    """train.mlflow.tracking_uri, else MLFLOW_TRACKING_URI, else MLflow 3's default (sqlite:///mlflow.db).

    MLflow 3 refuses the old ./mlruns file store unless MLFLOW_ALLOW_FILE_STORE=true, and Lightning's
    MLFlowLogger would fall back to it; so the URI is always passed explicitly.
    """
    return config.train.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def _probe_http(uri: str, timeout: float = 10.0) -> None:
    """An MLflow server answers GET /health; a refused or timed-out connection is the user's URI at fault."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # something answered (a proxy may guard /health): let MLflow itself judge
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise MultiboxError(f"train.mlflow.tracking_uri: cannot reach {uri} ({reason})") from None


def check_tracking(config: Config) -> None:
    """Fail in the first second, not after an epoch: missing packages, an unreachable MLflow tracking URI."""
    loggers = config.train.loggers
    for name in ("mlflow", "wandb"):
        if name in loggers:
            require_package(name, "train.loggers")
    if "mlflow" not in loggers:
        return
    uri = mlflow_tracking_uri(config)
    if uri.startswith(("http://", "https://")):
        _probe_http(uri)
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # any store problem (bad scheme, unreachable database, missing driver)
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MultiboxError(f"train.mlflow.tracking_uri: cannot use {uri} ({detail[:200]})") from None


def build_loggers(config: Config) -> list[Logger]:
    """The Lightning loggers train.loggers names, in that order, writing under train.output_dir."""
    out = Path(config.train.output_dir)
    run_name = out.resolve().name
    loggers: list[Logger] = []
    for name in config.train.loggers:
        if name == "csv":
            loggers.append(CSVLogger(out, name="", version=""))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(out, name="", version="tensorboard"))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            settings = config.train.mlflow
            loggers.append(
                MLFlowLogger(
                    experiment_name=settings.experiment,
                    run_name=settings.run_name or run_name,
                    tracking_uri=mlflow_tracking_uri(config),
                    tags={"multibox.output_dir": str(out.resolve())},
                )
            )
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            settings_w = config.train.wandb
            loggers.append(
                WandbLogger(
                    project=settings_w.project,
                    entity=settings_w.entity,
                    name=run_name,
                    save_dir=str(out),
                    offline=settings_w.offline,
                    config=config.to_dict(),
                )
            )
    return loggers


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits and _-. /; class names may hold anything."""
    return re.sub(r"[^\w\-. /]", "_", name)


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json as flat numbers: final/map, ..., final/ap/<class>."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"final/{key}"] = float(value)
        elif key == "per_class" and isinstance(value, dict):
            flat.update({_metric_name(f"final/ap/{name}"): float(ap) for name, ap in value.items() if ap is not None})
    return flat


def _log_mlflow_run(logger: Any, out: Path, metrics: dict[str, Any] | None, best: Path | None) -> dict[str, str]:
    """Final metrics, the run folder's files (report, pictures, metrics.json, config.yaml) and best.ckpt."""
    client, run_id = logger.experiment, logger.run_id
    for key, value in (final_metrics(metrics) if metrics else {}).items():
        client.log_metric(run_id, key, value)
    for entry in sorted(out.iterdir()):
        if entry.name in _SKIPPED or entry.name.startswith("."):
            continue
        if entry.is_dir():
            client.log_artifacts(run_id, str(entry), entry.name)
        elif entry.is_file():
            client.log_artifact(run_id, str(entry))
    if best is not None and best.is_file():
        client.log_artifact(run_id, str(best), "checkpoints")
    return {"tracking_uri": logger._tracking_uri, "experiment_id": logger.experiment_id, "run_id": run_id}


def _log_wandb_run(logger: Any, metrics: dict[str, Any] | None) -> dict[str, str]:
    """Final metrics into the W&B summary, then close the run (the next trial of a tune opens its own)."""
    run = logger.experiment
    if metrics:
        run.summary.update(final_metrics(metrics))
    folder = str(Path(run.dir).resolve().parent)  # run.dir is relative when train.output_dir is
    run.finish()
    return {"run_dir": folder, "run_id": run.id}


def finish_tracking(
    loggers: list[Logger], out: Path, metrics: dict[str, Any] | None, best: Path | None
) -> dict[str, Any]:
    """Send the finished run's files to MLflow / W&B and write tracking.json (which tracked run is this folder)."""
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger  # both import their package lazily

    record: dict[str, Any] = {}
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            record["mlflow"] = _log_mlflow_run(logger, out, metrics, best)
        elif isinstance(logger, WandbLogger):
            record["wandb"] = _log_wandb_run(logger, metrics)
    if record:
        text = (json.dumps(record, indent=2) + "\n").encode()
        atomic_write(out / TRACKING_FILE, lambda file: file.write(text))
    return record


def read_tracking(out: Path) -> dict[str, Any]:
    """tracking.json of a run folder ({} when it was not tracked)."""
    path = Path(out) / TRACKING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
