"""train.loggers: a 1-epoch run logged to a real `mlflow server` (SQLite backend, on 127.0.0.1) and to W&B
offline, read back through MlflowClient and from the W&B run folder; the one-line refusals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_runner import run_cli

from multibox.data.synth import make_synthetic_dataset
from multibox.engine.tracking import require_package
from multibox.errors import MultiboxError

pytest.importorskip("mlflow")
pytest.importorskip("wandb")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _multibox(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """In-process (tests/cli_runner.py); the MLflow server and W&B's service are real processes all the same."""
    return run_cli(*args, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a SQLite backend and a local artifact folder, on a free port; stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    log = (root / "server.log").open("w")
    # MLflow 3 also starts about ten job-runner processes (huey) that this test never uses: on 2 cores they took
    # most of the fixture's minute. Tracking works without them.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a loaded 2-core box needs minutes
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, mlflow_server):
    """One epoch of a tiny SSDLite logged to csv, MLflow (registering the ONNX model) and W&B offline."""
    root = tmp_path_factory.mktemp("tracked")
    make_synthetic_dataset(root / "data" / "train", 6, (64, 64), seed=1)
    make_synthetic_dataset(root / "data" / "val", 3, (64, 64), seed=2)
    (root / "config.yaml").write_text(
        "data:\n  train: {images: data/train/images, annotations: data/train/annotations.json}\n"
        "  val: {images: data/val/images, annotations: data/val/annotations.json}\n"
        "  input_size: [64, 64]\n  batch_size: 3\n  num_workers: 0\n  augment: none\n"
        "model: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}\n"
        "train:\n  epochs: 1\n  accelerator: cpu\n  progress: false\n  output_dir: runs/tracked\n"
        "  log_every_n_steps: 1\n  loggers: [csv, mlflow, wandb]\n"
        f"  mlflow: {{tracking_uri: '{mlflow_server}', experiment: tiny, register_model: tiny-ssd}}\n"
    )
    wandb_env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(root),
        "WANDB_CONFIG_DIR": str(root / "wandb-config"),
        "WANDB_CACHE_DIR": str(root / "wandb-cache"),
        "WANDB_DATA_DIR": str(root / "wandb-data"),
    }
    result = _multibox(["train", "-c", "config.yaml"], root, wandb_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "tracked", result


def test_mlflow_run_holds_params_metrics_artifacts_and_the_registered_model(tracked_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    out, result = tracked_run
    assert "registered best.ckpt as ONNX model 'tiny-ssd' version 1" in result.stdout
    record = json.loads((out / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(mlflow_server)
    run = client.get_run(record["run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name("tiny").experiment_id
    assert run.data.params["config/optimizer/lr"] == "0.002" and run.data.params["config/train/epochs"] == "1"
    final = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["final/map"] == pytest.approx(final["map"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]  # every step
    assert len(client.get_metric_history(run.info.run_id, "val/map")) == 1  # every epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "config.yaml",
        "metrics.json",
        "metrics.csv",
        "report.md",
        "report.html",
        "pr_curves.png",
        "confusion_matrix.png",
        "gallery",
        "checkpoints",
    } <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    versions = client.search_model_versions("name='tiny-ssd'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id


def test_wandb_offline_writes_a_run_folder_with_the_metrics(tracked_run):
    out, _ = tracked_run
    record = json.loads((out / "tracking.json").read_text())["wandb"]
    folder = Path(record["run_dir"])
    assert folder.is_dir() and folder.name.startswith("offline-run-") and folder.parent == out / "wandb"
    (log,) = folder.glob("run-*.wandb")  # the offline record log that `wandb sync` uploads later
    records = log.read_bytes()  # protobuf records: metric names are stored as plain strings
    assert b"train/loss" in records and b"val/map" in records and b"final/map" in records  # per step, epoch, final


def test_unreachable_tracking_uri_is_one_line_before_any_work(tmp_path):
    port = _free_port()  # nothing listens there once the probe socket is closed
    (tmp_path / "config.yaml").write_text(
        f"train: {{loggers: [mlflow], mlflow: {{tracking_uri: 'http://127.0.0.1:{port}'}}, output_dir: run}}\n"
    )
    result = _multibox(["train", "-c", "config.yaml"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: train.mlflow.tracking_uri: cannot reach http://127.0.0.1:{port} ([Errno 111] Connection refused)"
    ]


def test_a_missing_logger_package_names_the_extra_to_install():
    with pytest.raises(
        MultiboxError, match=r"^train.loggers: no_such_pkg needs .* pip install 'multibox\[no_such_pkg\]'$"
    ):
        require_package("no_such_pkg", "train.loggers")
