"""Where a model's INT8 accuracy goes: calibration methods, then one convolution quantized at a time.

    python benchmarks/int8_sensitivity.py --weights CKPT --out DIR [--calib-count 200] [--threads 1] [--scan]

1. Exports the checkpoint to FP32 ONNX and scores it on the config's validation set (``multibox eval``'s core).
2. Quantizes it whole (``--fp32-layers first``, as ``multibox export --int8`` does) with each activation-range
   estimator of ONNX Runtime (minmax, percentile, entropy) and scores each.
3. With ``--scan``: quantizes one convolution at a time (everything else in float) and records the mAP it
   costs alone, the per-layer sensitivity analysis of NVIDIA's "Integer Quantization for Deep Learning
   Inference" (Wu et al., 2020, section 5.1). Then keeps the k most sensitive in float (k = 1, 2, 4, 8) and
   scores the whole model again.

Prints a markdown table and writes DIR/int8_sensitivity.json. Issue 17: the 1-point mAP bound of INT8.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from multibox.inference.export import _train_files, export_checkpoint
from multibox.inference.exported_eval import evaluate_model, exported_config
from multibox.inference.quantize import (
    CALIB_METHODS,
    calibration_files,
    load_calibration,
    onnx_conv_names,
    quantize_onnx,
)
from multibox.inference.runtime import ExportedModel


def score(path: Path, config: Any, threads: int) -> float:
    evaluation, _ = evaluate_model(ExportedModel(path, threads=threads), config, progress=False)
    return float(evaluation.metrics["map"])


OV_PRESETS = ("performance", "mixed")


def openvino_map(fp32: Path, loaded: Any, calibration: Any, config: Any, preset: str, out: Path, threads: int) -> float:
    """NNCF INT8 of the FP32 graph with `preset` (first convolution in float), scored like the ONNX models."""
    import openvino as ov

    from multibox.inference.export import export_metadata
    from multibox.inference.quantize import quantize_openvino
    from multibox.inference.runtime import write_rt_info

    start = time.perf_counter()
    model, _ = quantize_openvino(ov.convert_model(str(fp32)), calibration, ["first"], preset=preset)
    write_rt_info(model, export_metadata(loaded, False, "int8"))
    path = out / f"ov-{preset}.xml"
    ov.save_model(model, str(path))
    value = score(path, config, threads)
    print(f"openvino {preset}: mAP {value:.4f} in {time.perf_counter() - start:.0f} s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calib-count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--openvino", action="store_true", help="also NNCF's presets (performance, mixed)")
    parser.add_argument("--scan", action="store_true", help="one convolution at a time, then the top k in float")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / "fp32.onnx"
    if not fp32.exists():
        export_checkpoint(args.weights, "onnx", out=fp32, dynamic_batch=True)
    from multibox.engine.checkpoint import load_checkpoint

    loaded = load_checkpoint(args.weights)
    files, source = calibration_files(None, _train_files(loaded))
    calibration = load_calibration(files, args.calib_count, loaded.config.data.input_size, source)
    config = exported_config(ExportedModel(fp32), None, ["data.num_workers=0"])
    results: dict[str, Any] = {"weights": str(args.weights), "fp32_map": score(fp32, config, args.threads)}
    print(f"FP32 ONNX mAP {results['fp32_map']:.4f}")

    def quantized_map(name: str, **options: Any) -> float:
        path = args.out / f"{name}.onnx"
        start = time.perf_counter()
        quantize_onnx(fp32, path, calibration, **options)
        value = score(path, config, args.threads)
        print(f"{name}: mAP {value:.4f} ({value - results['fp32_map']:+.4f}) in {time.perf_counter() - start:.0f} s")
        path.unlink()
        return value

    results["methods"] = {m: quantized_map(m, fp32_layers=["first"], method=m) for m in CALIB_METHODS}
    if args.openvino:
        results["openvino_presets"] = {
            p: openvino_map(fp32, loaded, calibration, config, p, args.out, args.threads) for p in OV_PRESETS
        }
    if args.scan:
        convs = onnx_conv_names(fp32)
        alone = {c: quantized_map(f"only-{i}", fp32_layers=[], only=[c]) for i, c in enumerate(convs)}
        ranked = sorted(convs, key=lambda c: alone[c])
        results["alone"] = alone
        results["float_top_k"] = {
            k: quantized_map(f"top{k}", fp32_layers=ranked[:k]) for k in (1, 2, 4, 8) if k <= len(ranked)
        }
        results["ranked"] = [(c, alone[c] - results["fp32_map"]) for c in ranked[:12]]
        print("| convolution kept alone in INT8 | mAP change |\n|---|---|")
        for name, change in results["ranked"]:
            print(f"| `{name}` | {change:+.4f} |")
    (args.out / "int8_sensitivity.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
