"""`multibox bench --formats ...`: one accuracy-and-speed table per batch size, printed and saved as JSON and
markdown."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from multibox.errors import MultiboxError
from multibox.inference.format_bench import FormatResult, bench_formats, parse_formats
from multibox.inference.quantize import CALIB_METHODS, DEFAULT_ATOL, DEFAULT_CALIB_METHOD
from multibox.outputs import atomic_write, writable_dir

COLUMNS = ("format", "file MB", "mAP@[.5:.95]", "mAP@0.5", "p50 ms", "p95 ms", "images/s")


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _cells(r: FormatResult) -> list[str]:
    if r.error is not None:
        return [r.format, "–", "–", "–", "–", "–", "–"]
    return [
        r.format,
        _fmt(None if r.file_bytes is None else r.file_bytes / 1e6, ".2f"),
        _fmt(r.map, ".4f"),
        _fmt(r.map_50, ".4f"),
        _fmt(r.p50_ms, ".2f"),
        _fmt(r.p95_ms, ".2f"),
        _fmt(r.images_per_s, ".1f"),
    ]


def markdown(results: list[FormatResult], title: str) -> str:
    """The tables as markdown, one per batch size, then the formats that could not run and why."""
    lines = [f"# {title}", ""]
    for n in dict.fromkeys(r.batch_size for r in results):
        lines += [f"## batch {n}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in results if r.batch_size == n and r.error is None]
        lines.append("")
    failed = {r.format: r.error for r in results if r.error is not None}
    if failed:
        lines += ["## not run", ""] + [f"- {name}: {reason}" for name, reason in failed.items()] + [""]
    return "\n".join(lines)


def _print(results: list[FormatResult], title: str) -> None:
    console = Console() if Console().is_terminal else Console(width=120)
    for n in dict.fromkeys(r.batch_size for r in results):
        table = Table(title=f"{title} — batch {n}")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column == "format" else "right")
        for r in results:
            if r.batch_size == n and r.error is None:
                table.add_row(*_cells(r))
        console.print(table)
    for name, reason in {r.format: r.error for r in results if r.error is not None}.items():
        console.print(f"not run: {name}: {reason}", highlight=False)


def _config(weights: Path, data: Path | None, overrides: list[str]) -> Any:
    from multibox.config import apply_overrides, load_config, parse_config, resolve_paths
    from multibox.engine.checkpoint import read_checkpoint

    if data is not None:
        return load_config(data, overrides)
    embedded = read_checkpoint(weights)["hyper_parameters"]["config"]
    return resolve_paths(parse_config(apply_overrides(embedded, overrides), f"{weights} (embedded config)"))


def format_bench_command(args: argparse.Namespace) -> list[FormatResult]:
    """Run every asked format; print the tables; write bench.json and bench.md into --out."""
    from multibox.inference.bench import machine_info
    from multibox.inference.quantize import parse_fp32_layers

    if args.weights is None or args.config is not None:
        raise MultiboxError("bench --formats: give --weights CKPT (and --data CONFIG for another validation set)")
    formats = parse_formats(args.formats)
    try:
        sizes = [int(part) for part in (args.batch_sizes or "1,8").split(",") if part.strip()]
    except ValueError:
        raise MultiboxError(
            f"--batch-sizes: expected comma-separated integers such as 1,8, got {args.batch_sizes!r}"
        ) from None
    out = Path(args.out) if args.out is not None else args.weights.with_name(args.weights.stem + "_bench")
    writable_dir(out, "bench output")
    config = _config(args.weights, args.data, args.overrides)
    device = "cpu" if args.device in ("auto", "cpu") else "cuda"
    with tempfile.TemporaryDirectory(prefix=".multibox-bench-", dir=out) as folder:
        results = bench_formats(
            args.weights,
            formats,
            sizes,
            Path(folder),
            config,
            device,
            args.warmup,
            args.repeat,
            args.calib_images,
            args.calib_count,
            parse_fp32_layers(args.fp32_layers),
            evaluate=not args.no_map,
            calib_method=args.calib_method,
            atol=args.atol,
            progress=lambda name: print(f"benchmarking {name} ...", flush=True),
        )
    from multibox.engine.checkpoint import read_checkpoint

    trained = read_checkpoint(args.weights)["hyper_parameters"]["config"]
    size = "×".join(map(str, trained["data"]["input_size"]))
    title = f"{trained['model']['name']} {size}, {torch.get_num_threads()} thread(s), {device} — {args.weights}"
    _print(results, title)
    record = {
        "weights": str(args.weights),
        "title": title,
        "machine": machine_info(),
        "warmup": args.warmup,
        "repeat": args.repeat,
        "results": [asdict(r) for r in results],
    }
    atomic_write(out / "bench.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    atomic_write(out / "bench.md", lambda f: f.write(markdown(results, title).encode()))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`multibox bench`'s options (cli.py makes the subparser)."""
    parser.add_argument("--weights", type=Path, help="checkpoint (.ckpt)")
    parser.add_argument("-c", "--config", type=Path, help="config: a random-init detector (no checkpoint needed)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[512,512]"
    )
    parser.add_argument("--batch-sizes", help="comma-separated (default 1,8,32; with --formats 1,8)")
    parser.add_argument("--device", default="auto", help="auto (CPU, and the GPU when present), cpu, cuda or cpu,cuda")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls; the median is reported (default 10)")
    parser.add_argument("--no-onnx", action="store_true", help="PyTorch only")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the timings and machine as JSON")
    parser.add_argument(
        "--formats",
        metavar="LIST",
        help="accuracy and speed per deployment format: pytorch,onnx,onnx-int8,"
        "openvino,openvino-fp16,openvino-int8 (CPU); onnx-cuda,onnx-trt-fp16,onnx-trt-int8 (--device cuda)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="CONFIG",
        help="--formats: config whose val set is scored (default: the checkpoint's)",
    )
    parser.add_argument("--out", type=Path, help="--formats: folder for bench.json and bench.md (default CKPT_bench/)")
    parser.add_argument(
        "--calib-images", type=Path, metavar="DIR", help="--formats: INT8 calibration images (default: training images)"
    )
    parser.add_argument(
        "--calib-count", type=int, default=200, help="--formats: INT8 calibration images used (default 200)"
    )
    parser.add_argument(
        "--fp32-layers", default="first", help="--formats: convolutions kept in float in INT8 (default first)"
    )
    parser.add_argument(
        "--calib-method",
        choices=CALIB_METHODS,
        default=DEFAULT_CALIB_METHOD,
        help="--formats: activation ranges of onnx-int8 (default percentile)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"--formats: largest box/score difference of FP32 exports from PyTorch (default {DEFAULT_ATOL:g})",
    )
    parser.add_argument(
        "--no-map", action="store_true", help="--formats: speed and size only, no validation-set scores"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for every runtime (PyTorch, ONNX Runtime, OpenVINO); default: PyTorch's (the cores)",
    )


def bench_command(args: argparse.Namespace) -> int:
    """``multibox bench``: deployment formats side by side (``--formats``), else one model's stages and batch sizes."""
    if args.threads is not None:
        if args.threads < 1:
            raise MultiboxError(f"--threads: must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)  # ONNX Runtime and OpenVINO sessions take the same count
    if args.formats is not None:
        format_bench_command(args)
        return 0
    from multibox.inference.bench import bench_command as bench_stages

    bench_stages(
        args.weights,
        args.config,
        args.overrides,
        args.batch_sizes or "1,8,32",
        args.device,
        args.warmup,
        args.repeat,
        args.json,
        onnx=not args.no_onnx,
    )
    return 0
