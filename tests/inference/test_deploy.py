"""Deployment artefacts: INT8 ONNX, OpenVINO IR, evaluating an exported model, and their bad inputs."""

from __future__ import annotations

import ctypes
import gc
import signal
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from cli_runner import run_cli

from multibox.cli import main
from multibox.engine.checkpoint import load_checkpoint
from multibox.engine.evaluate import evaluate_checkpoint
from multibox.errors import MultiboxError
from multibox.inference.export import detection_agreement, export_checkpoint
from multibox.inference.exported_eval import evaluate_exported
from multibox.inference.runtime import ExportedModel

CONFIG = """\
data:
  train: {images: data/images, annotations: data/annotations.json}
  val: {images: data/images, annotations: data/annotations.json}
  input_size: [64, 64]
train:
  progress: false
"""


@pytest.fixture(scope="module")
def deploy(tmp_path_factory, tiny_checkpoint, shapes_dataset):
    """The tiny checkpoint exported as FP32 ONNX, INT8 ONNX and FP32 OpenVINO, with a hand-written config
    (relative paths) whose train and val sets are the five shape images."""
    folder = tmp_path_factory.mktemp("deploy")
    (folder / "data").symlink_to(shapes_dataset)
    (folder / "config.yaml").write_text(CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    images = shapes_dataset / "images"
    files = {
        "onnx": export_checkpoint(tiny_checkpoint, "onnx", folder / "fp32.onnx", dynamic_batch=True).path,
        "int8": export_checkpoint(tiny_checkpoint, "onnx", folder / "int8.onnx", int8=True, calib_images=images).path,
        "openvino": export_checkpoint(tiny_checkpoint, "openvino", folder / "fp32.xml").path,
    }
    torch.set_num_threads(threads)
    return folder, files


def _detections(model, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    sizes = torch.tensor([list(images.shape[-2:])] * len(images))
    return model(images, sizes)


def test_int8_finds_most_fp32_detections(deploy, shapes_dataset):
    from multibox.inference.quantize import load_calibration

    folder, files = deploy
    images = torch.from_numpy(load_calibration(sorted((shapes_dataset / "images").iterdir()), 5, (64, 64), "t").images)
    fp32, int8 = ExportedModel(files["onnx"]), ExportedModel(files["int8"])
    assert int8.metadata.precision == "int8" and int8.metadata.class_names == fp32.metadata.class_names
    agreement = detection_agreement(_detections(fp32.detect, images), _detections(int8.detect, images))
    assert agreement.total >= 10
    assert agreement.fraction >= 0.6, agreement.describe()
    quantized = onnx.load(str(files["int8"]))
    assert sum(node.op_type == "QuantizeLinear" for node in quantized.graph.node) > 10


def test_openvino_int8_finds_most_fp32_detections(deploy, tiny_checkpoint, shapes_dataset, tmp_path):
    """NNCF post-training INT8 (mixed preset) of the OpenVINO IR, calibrated like the ONNX one."""
    from multibox.inference.quantize import load_calibration

    _, files = deploy
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = export_checkpoint(
            tiny_checkpoint, "openvino", tmp_path / "int8.xml", int8=True, calib_images=shapes_dataset / "images"
        )
    finally:
        torch.set_num_threads(threads)
    assert result.precision == "int8" and (tmp_path / "int8.bin").is_file()
    images = torch.from_numpy(load_calibration(sorted((shapes_dataset / "images").iterdir()), 5, (64, 64), "t").images)
    fp32, int8 = ExportedModel(files["onnx"]), ExportedModel(tmp_path / "int8.xml")
    assert int8.metadata.precision == "int8" and int8.metadata.class_names == fp32.metadata.class_names
    agreement = detection_agreement(_detections(fp32.detect, images), _detections(int8.detect, images))
    assert agreement.total >= 10
    assert agreement.fraction >= 0.6, agreement.describe()


def _activation_scales(path: Path) -> dict[str, float]:
    """Scale of each QuantizeLinear of an activation (weights are quantized offline: no QuantizeLinear)."""
    model = onnx.load(str(path))
    values = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    return {n.input[0]: float(values[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_calibration_method_sets_the_activation_ranges(deploy, tmp_path):
    """Percentile ranges leave out the rarest values, so no activation gets a wider range than min/max gives it
    and those with many values get a narrower one; the method used is recorded in the file."""
    from multibox.inference.quantize import Calibration, quantize_onnx

    _, files = deploy
    # Enough values per tensor (~10^5) that the top 0.001 % is more than the single largest one.
    pixels = np.random.default_rng(0).integers(0, 256, (32, 3, 64, 64), dtype=np.uint8)
    calibration = Calibration(pixels, [], "random pixels")
    scales = {}
    for method in ("minmax", "percentile"):
        quantize_onnx(files["onnx"], tmp_path / f"{method}.onnx", calibration, ["first"], method)
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / f"{method}.onnx")).metadata_props}
        assert meta["calib_method"] == method and meta["precision"] == "int8"
        scales[method] = _activation_scales(tmp_path / f"{method}.onnx")
    assert scales["minmax"].keys() == scales["percentile"].keys() and len(scales["minmax"]) > 10
    narrower = [t for t, s in scales["percentile"].items() if s < scales["minmax"][t] * 0.999]
    assert all(s <= scales["minmax"][t] * 1.001 for t, s in scales["percentile"].items())
    assert len(narrower) >= 10, narrower
    with pytest.raises(MultiboxError, match="calibration method: expected one of percentile, minmax, entropy"):
        quantize_onnx(files["onnx"], tmp_path / "x.onnx", calibration, ["first"], "kl")
    assert not (tmp_path / "x.onnx").exists()  # the large early maps; a 2x2 map's top 0.001 % is its maximum


def test_openvino_serves_any_batch_size_with_the_same_detections(deploy):
    """One loaded IR, batches of 3, 1 and 2 (compiled per batch size at a static shape): each image's outputs
    equal those of the batch of 3, whatever batch it came in."""
    _, files = deploy
    model = ExportedModel(files["openvino"])
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8).numpy()
    together = model.run(images)
    for start, stop in ((0, 1), (1, 3)):
        for out, ref in zip(model.run(images[start:stop]), together, strict=True):
            assert out.shape[0] == stop - start
            assert np.allclose(out, ref[start:stop], atol=1e-5)


def _alternate_signal_stack() -> str:
    """'none', or whether the thread's alternate signal stack (sigaltstack(2)) lies in mapped memory."""

    class StackT(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    stack = StackT()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    if not stack.sp:
        return "none"
    for line in Path("/proc/self/maps").read_text().splitlines():
        low, high = (int(x, 16) for x in line.split()[0].split("-"))
        if low <= stack.sp < high:
            return "mapped"
    return "unmapped"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_openvino_models_dropped_in_any_order_leave_signals_deliverable(deploy):
    """Two OpenVINO models freed first-in first-out left the first one's freed alternate signal stack installed,
    and the next SIGCHLD (a loader worker exiting) killed the process with a bare segfault (runtime.openvino_core)."""
    _, files = deploy
    images = np.zeros((1, 3, 64, 64), np.uint8)
    first = ExportedModel(files["openvino"])
    first.run(images)
    second = ExportedModel(files["openvino"])
    second.run(images)
    del first
    gc.collect()
    del second
    gc.collect()
    assert _alternate_signal_stack() in ("none", "mapped")
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == [1]


def test_exported_detections_and_eval_equal_the_checkpoint(deploy, tiny_checkpoint, shapes_dataset, monkeypatch):
    folder, files = deploy
    detector = load_checkpoint(tiny_checkpoint).detector.eval()
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    reference = _detections(lambda x, s: detector.detect(x.float() / 255.0, s), images)
    for kind in ("onnx", "openvino"):
        for ours, theirs in zip(_detections(ExportedModel(files[kind]).detect, images), reference, strict=True):
            assert torch.allclose(ours["boxes"], theirs["boxes"], atol=1e-3) and torch.equal(
                ours["labels"], theirs["labels"]
            )
    config = folder / "config.yaml"
    monkeypatch.chdir(folder)  # the config's relative paths, as a user runs it from its folder
    voc = ["eval.metric=voc07"]  # scored the same way as a checkpoint, eval.metric included
    expected = evaluate_checkpoint(tiny_checkpoint, config, voc)
    for kind in ("onnx", "openvino"):
        metrics = evaluate_exported(files[kind], config, voc)
        assert abs(metrics["map"] - expected["map"]) <= 0.001 and abs(metrics["map_50"] - expected["map_50"]) <= 0.001
        assert abs(metrics["voc_map"] - expected["voc_map"]) <= 0.001


def test_eval_of_an_onnx_file_from_the_console_script(deploy):
    """A process of its own: the config's two loader workers are forked, and forking this test process, which already
    runs ONNX Runtime's and OpenVINO's thread pools, deadlocked once in CI (tests/cli_runner.py)."""
    folder, files = deploy
    done = run_cli("eval", "--weights", "fp32.onnx", "-c", "config.yaml", "--out", "m.json", cwd=folder, console=True)
    assert done.returncode == 0, done.stderr
    assert '"map"' in (folder / "m.json").read_text()


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_model_without_metadata_is_refused(deploy, capsys, monkeypatch):
    folder, files = deploy
    monkeypatch.chdir(folder)
    model = onnx.load(str(files["onnx"]))
    del model.metadata_props[:]
    bare = folder / "bare.onnx"
    onnx.save(model, str(bare))
    assert "no multibox metadata" in _error(capsys, ["eval", "--weights", str(bare), "-c", str(folder / "config.yaml")])


def test_unreadable_calibration_images(tmp_path, tiny_checkpoint, shapes_dataset, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("a.jpg", "b.png"):
        (calib / name).write_bytes(b"not an image")
    out = tmp_path / "out"
    out.mkdir()
    args = [
        "export",
        "--weights",
        str(tiny_checkpoint),
        "--int8",
        "--calib-images",
        str(calib),
        "--out",
        str(out / "m.onnx"),
    ]
    assert "none of the 2 calibration image(s) could be read" in _error(capsys, args)
    assert list(out.iterdir()) == []  # nothing half-written
    good = next((shapes_dataset / "images").iterdir())
    (calib / "good.png").write_bytes(good.read_bytes())
    with pytest.raises(SystemExit) as stop:  # argparse: usage, then one "invalid choice" line
        main([*args, "--calib-method", "kl"])
    assert stop.value.code == 2 and "invalid choice: 'kl'" in capsys.readouterr().err
    assert main([*args, "--calib-method", "minmax"]) == 0
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["m.onnx"]
    meta = {p.key: p.value for p in onnx.load(str(out / "m.onnx")).metadata_props}
    assert meta["calib_method"] == "minmax"  # the option reaches the quantizer (default: percentile)


def test_int8_for_torchscript_and_missing_openvino(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    out = tmp_path / "m.torchscript"
    assert "--int8: not supported for --format torchscript" in _error(
        capsys, ["export", "--weights", str(tiny_checkpoint), "--format", "torchscript", "--int8", "--out", str(out)]
    )
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino → ImportError, as when not installed
    assert "OpenVINO is not installed" in _error(
        capsys, ["export", "--weights", str(tiny_checkpoint), "--format", "openvino", "--out", str(tmp_path / "m.xml")]
    )
    assert list(tmp_path.iterdir()) == []


def test_bench_formats_lists_what_cannot_run(deploy, tiny_checkpoint, capsys, monkeypatch):
    folder, _ = deploy
    monkeypatch.chdir(folder)
    out = folder / "bench"
    assert (
        main(
            [
                "bench",
                "--weights",
                str(tiny_checkpoint),
                "--formats",
                "onnx,onnx-cuda",
                "--data",
                str(folder / "config.yaml"),
                "--batch-sizes",
                "1",
                "--repeat",
                "1",
                "--warmup",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = (out / "bench.md").read_text()
    assert "| onnx |" in text and "onnx-cuda: needs --device cuda" in text
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md"]
