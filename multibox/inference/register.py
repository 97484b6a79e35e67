"""Register a finished run's model in the MLflow Model Registry as ONNX (train.mlflow.register_model).

The best checkpoint is exported with NMS inside the graph (what `multibox export --nms` writes, checked
against PyTorch), logged into the run that trained it, and registered under the configured name, so the
registry's version links back to the run's params, metrics and report. Prints nothing.
"""

from __future__ import annotations

from pathlib import Path

from multibox.engine.tracking import read_tracking
from multibox.errors import MultiboxError
from multibox.inference.export import export_checkpoint


def register_onnx(run_dir: Path, name: str) -> str:
    """Export run_dir's best.ckpt (last.ckpt without a val set) to ONNX, log and register it; returns the version."""
    run = read_tracking(run_dir).get("mlflow")
    if run is None:
        raise MultiboxError(f"train.mlflow.register_model: {run_dir} has no MLflow run (train.loggers lacks mlflow)")
    folder = Path(run_dir) / "checkpoints"
    weights = folder / "best.ckpt" if (folder / "best.ckpt").is_file() else folder / "last.ckpt"
    result = export_checkpoint(weights, "onnx", Path(run_dir) / "model_nms.onnx", nms=True, force=True)
    import mlflow
    import onnx

    mlflow.set_tracking_uri(run["tracking_uri"])
    with mlflow.start_run(run_id=run["run_id"]):
        info = mlflow.onnx.log_model(onnx.load(str(result.path)), name="model", registered_model_name=name)
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else "?"
