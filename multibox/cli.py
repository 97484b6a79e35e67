"""The `multibox` command: a thin layer over the library.

Every user error surfaces as ``error: <one line>`` with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

from multibox.dataset_formats import FORMAT_NAMES, WRITABLE_FORMATS
from multibox.errors import MultiboxError
from multibox.outputs import os_reason


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text!r}")
    return int(parts[0]), int(parts[1])


def _add_tile_options(parser: argparse.ArgumentParser) -> None:
    """Sliced inference for large frames (see multibox.engine.sliced)."""
    parser.add_argument(
        "--tile",
        type=_size,
        metavar="HxW",
        help="slice each frame into HxW tiles (native pixels), "
        "run them as batches and merge their detections (small objects in large frames)",
    )
    parser.add_argument(
        "--overlap", type=float, default=0.2, help="tile overlap, fraction of the tile in [0, 1) (default 0.2)"
    )
    parser.add_argument(
        "--full-frame", action="store_true", help="with --tile: also run the whole frame downscaled (large objects)"
    )
    parser.add_argument(
        "--merge",
        choices=["nms", "merge"],
        default=None,
        help="with --tile: class-wise NMS, or join boxes cut by a tile edge first (default nms)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multibox", description="Train, evaluate and run SSD object detectors.")
    parser.add_argument("--version", action="version", version=f"multibox {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a detector from a config")
    train.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue a run: the given checkpoint, or the newest in train.output_dir",
    )

    evaluate = sub.add_parser("eval", help="COCO metrics of a checkpoint on the config's val set")
    evaluate.add_argument(
        "-c", "--config", type=Path, help="config for data and eval settings (default: the checkpoint's)"
    )
    evaluate.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    evaluate.add_argument(
        "--weights", required=True, type=Path, help="checkpoint (.ckpt) or exported model (.onnx, OpenVINO .xml)"
    )
    evaluate.add_argument("--out", type=Path, help="write the metrics as JSON here")
    evaluate.add_argument(
        "--plots",
        nargs="?",
        const=True,
        default=None,
        type=Path,
        metavar="DIR",
        help="also write PR curves, confusion matrix, worst-image gallery and report.md/.html into DIR "
        "(default: <run>/eval, or eval-2, ... when that holds a report)",
    )
    evaluate.add_argument(
        "--plot-conf",
        type=float,
        default=0.3,
        metavar="SCORE",
        help="score threshold of the confusion matrix and gallery (default 0.3; metrics use every detection)",
    )
    _add_tile_options(evaluate)

    predict = sub.add_parser("predict", help="detect objects in an image, a folder of images or a video")
    predict.add_argument("--weights", required=True, type=Path, help="checkpoint (.ckpt)")
    predict.add_argument(
        "--source", required=True, type=Path, help="image file, folder (recursive) or video (.mp4, .avi, ...)"
    )
    predict.add_argument(
        "--out", required=True, type=Path, help="new folder for annotated images or video and predictions.json"
    )
    predict.add_argument("--conf", type=float, default=0.3, help="minimum score kept (default 0.3)")
    predict.add_argument("--iou", type=float, help="NMS IoU threshold (default: the checkpoint's eval.nms_threshold)")
    predict.add_argument(
        "--max-det", type=int, help="detections kept per image (default: the checkpoint's eval.max_detections)"
    )
    predict.add_argument(
        "--classes", nargs="+", metavar="CLASS", help="keep only these classes: names or 0-based indices"
    )
    predict.add_argument(
        "--save-txt", action="store_true", help="also write labels/<image>.txt: class cx cy w h score (YOLO style)"
    )
    predict.add_argument("--batch-size", type=int, default=8, help="images or frames per forward pass (default 8)")
    predict.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    predict.add_argument("--half", action="store_true", help="fp16 inference (CUDA only)")
    _add_tile_options(predict)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write a synthetic COCO dataset of coloured shapes")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--images", type=int, default=200)
    synth.add_argument("--size", type=_size, default=(128, 128), help="HxW (default 128x128)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--min-size", type=float, default=0.06, help="smallest shape, fraction of the shorter side")
    synth.add_argument("--max-size", type=float, default=0.5, help="largest shape, fraction of the shorter side")
    synth.add_argument(
        "--max-objects", type=int, default=6, help="most shapes per image (default 6; e.g. 40 for large frames)"
    )
    validate = data.add_parser("validate", help="check every image and annotation of a dataset (exit 1 on errors)")
    validate.add_argument("-c", "--config", type=Path, help="config whose data.train / data.val are checked")
    validate.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the config")
    validate.add_argument("--images", type=Path, help="images folder or dataset root (instead of a config)")
    validate.add_argument("--annotations", type=Path, help="annotation file or split, as data.train.annotations")
    validate.add_argument(
        "--format",
        default="coco",
        choices=FORMAT_NAMES,
        help="annotation format (default coco)",
    )
    validate.add_argument(
        "--fix", type=Path, metavar="OUT", help="write a cleaned copy into OUT (new or empty folder; COCO format)"
    )
    validate.add_argument("--workers", type=int, default=8, help="image decoding threads (default 8)")
    validate.add_argument("--max-rows", type=int, default=50, help="problems listed in the table (default 50)")
    stats = data.add_parser("stats", help="box statistics and default-box coverage of a config's dataset")
    stats.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    stats.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[512,512]"
    )
    stats.add_argument("--split", choices=["train", "val"], default="train", help="which split (default train)")
    stats.add_argument(
        "--out", type=Path, help="folder for stats.png and stats.json (default <train.output_dir>/data_stats)"
    )
    convert = data.add_parser("convert", help="convert a dataset between formats (into a new folder; never overwrites)")
    convert.add_argument("--from", dest="source_format", required=True, choices=FORMAT_NAMES)
    convert.add_argument("--to", dest="target_format", required=True, choices=WRITABLE_FORMATS)
    convert.add_argument("src", type=Path, help="dataset root or images folder, as data.train.images")
    convert.add_argument("dst", type=Path, help="new or empty output folder")
    convert.add_argument(
        "--annotations", help="as data.train.annotations (coco/txt default: SRC/annotations.json|txt with SRC/images)"
    )
    convert.add_argument("--class-names", help="names file, or comma-separated names (voc, yolo, txt)")
    convert.add_argument("--classes", help="openimages: comma-separated display names to keep")

    demo = sub.add_parser("demo", help="synthetic data, training, evaluation and predictions, end to end on the CPU")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the demo config")

    summary = sub.add_parser(
        "summary", help="layers, parameters, default boxes, mult-adds and memory of a config's model"
    )
    summary.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    summary.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[512,512]"
    )
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    summary.add_argument("--depth", type=int, default=3, help="deepest module nesting shown (default 3)")

    export = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript, checked against PyTorch")
    export.add_argument("--weights", required=True, type=Path, help="checkpoint (.ckpt)")
    export.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "torchscript", "openvino"],
        help="default onnx; openvino writes NAME.xml + NAME.bin (pip install 'multibox[deploy]')",
    )
    export.add_argument(
        "--out", type=Path, help="output file (default: next to the checkpoint, CKPT[_nms].onnx|.torchscript)"
    )
    export.add_argument("--nms", action="store_true", help="score threshold, per-class NMS and top-k inside the graph")
    export.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: fixed at --batch-size)")
    export.add_argument(
        "--batch-size", type=int, default=1, help="batch of the exported graph and of the check (default 1)"
    )
    export.add_argument(
        "--sample-images", type=Path, metavar="DIR", help="images for the parity check (default: random pixels)"
    )
    export.add_argument(
        "--atol", type=float, default=1e-4, help="largest box/score difference from PyTorch allowed (default 1e-4)"
    )
    export.add_argument("--force", action="store_true", help="overwrite an existing output file")
    export.add_argument("--int8", action="store_true", help="post-training INT8 (onnx: QDQ static; openvino: NNCF)")
    export.add_argument(
        "--calib-images",
        type=Path,
        metavar="DIR",
        help="INT8 calibration images (default: the config's training images)",
    )
    export.add_argument("--calib-count", type=int, default=200, help="INT8 calibration images used (default 200)")
    export.add_argument(
        "--fp32-layers",
        default="first",
        metavar="LAYERS",
        help="convolutions kept in float with --int8: first, head, none or name parts, comma-separated (default first)",
    )
    export.add_argument("--fp16", action="store_true", help="openvino: FP16 weights")

    bench = sub.add_parser(
        "bench", help="latency and throughput: model, postprocess, end to end; PyTorch and ONNX Runtime"
    )
    bench.add_argument("--weights", type=Path, help="checkpoint (.ckpt)")
    bench.add_argument("-c", "--config", type=Path, help="config: a random-init detector (no checkpoint needed)")
    bench.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[512,512]"
    )
    bench.add_argument("--batch-sizes", help="comma-separated (default 1,8,32; with --formats 1,8)")
    bench.add_argument("--device", default="auto", help="auto (CPU, and the GPU when present), cpu, cuda or cpu,cuda")
    bench.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    bench.add_argument("--repeat", type=int, default=10, help="timed calls; the median is reported (default 10)")
    bench.add_argument("--no-onnx", action="store_true", help="PyTorch only")
    bench.add_argument("--json", type=Path, metavar="OUT", help="also write the timings and machine as JSON")
    bench.add_argument(
        "--formats",
        metavar="LIST",
        help="accuracy and speed per deployment format: pytorch,onnx,onnx-int8,"
        "openvino,openvino-fp16,openvino-int8 (CPU); onnx-cuda,onnx-trt-fp16,onnx-trt-int8 (--device cuda)",
    )
    bench.add_argument(
        "--data",
        type=Path,
        metavar="CONFIG",
        help="--formats: config whose val set is scored (default: the checkpoint's)",
    )
    bench.add_argument("--out", type=Path, help="--formats: folder for bench.json and bench.md (default CKPT_bench/)")
    bench.add_argument(
        "--calib-images", type=Path, metavar="DIR", help="--formats: INT8 calibration images (default: training images)"
    )
    bench.add_argument(
        "--calib-count", type=int, default=200, help="--formats: INT8 calibration images used (default 200)"
    )
    bench.add_argument(
        "--fp32-layers", default="first", help="--formats: convolutions kept in float in INT8 (default first)"
    )
    bench.add_argument("--no-map", action="store_true", help="--formats: speed and size only, no validation-set scores")
    bench.add_argument(
        "--threads",
        type=int,
        help="CPU threads for every runtime (PyTorch, ONNX Runtime, OpenVINO); default: PyTorch's (the cores)",
    )

    anchors = sub.add_parser("anchors", help="default-box tools").add_subparsers(dest="anchors_command", required=True)
    fit = anchors.add_parser(
        "fit", help="fit default-box sizes and aspect ratios to the training boxes (scale-aware SSD)"
    )
    fit.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    fit.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.input_size=[384,640]"
    )
    fit.add_argument(
        "--out",
        type=Path,
        help="anchors YAML fragment to write (default <train.output_dir>/anchors.yaml; never overwritten)",
    )
    fit.add_argument("--budget", type=int, help="most default boxes allowed (default: as many as the current layout)")

    config = sub.add_parser("config", help="print a resolved config, or write a commented starting one")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="the fully resolved config of a command line, defaults filled in")
    show.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")
    init = config_sub.add_parser(
        "init", help="every key with its default and help as a comment: multibox config init > my.yaml"
    )
    init.add_argument("--model", help="model.name, e.g. ssdlite320_mobilenet_v3_large (default ssd300_vgg16)")
    init.add_argument(
        "--format",
        default="coco",
        choices=FORMAT_NAMES,
        help="data.format, with example paths laid out as that format's tools do (default coco)",
    )

    runs = sub.add_parser("runs", help="compare runs on disk").add_subparsers(dest="runs_command", required=True)
    runs_ls = runs.add_parser("ls", help="a table of the runs under DIR: key metrics and the config keys that differ")
    runs_ls.add_argument("dir", type=Path, help="folder holding run folders (each with config.yaml, metrics.json)")
    runs_ls.add_argument(
        "--plot",
        nargs="?",
        const=True,
        default=None,
        type=Path,
        metavar="PNG",
        help="also overlay the runs' val mAP curves in one PNG (default DIR/runs_val_map.png)",
    )

    tune = sub.add_parser("tune", help="hyper-parameter search with Optuna; each trial is a run in DIR/trial_NNN")
    tune.add_argument("-c", "--config", required=True, type=Path, help="YAML or JSON config")
    tune.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the config, for every trial"
    )
    tune.add_argument("--trials", required=True, type=int, help="trials this process runs (other workers add theirs)")
    tune.add_argument(
        "--space", required=True, type=Path, help="YAML: config key -> {log|int|float: [low, high]} or {choice: [...]}"
    )
    tune.add_argument(
        "--out", type=Path, help="folder of the trials, study.db and the report (default train.output_dir)"
    )
    tune.add_argument(
        "--storage",
        help="Optuna RDB URL shared by workers, e.g. postgresql://user:pw@host/db (default sqlite:///OUT/study.db)",
    )
    tune.add_argument("--study", default="multibox", help="study name; the same name continues it (default multibox)")
    tune.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    return parser


def _version() -> str:
    """The installed distribution's version (what pip reports), the source's when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multibox")
    except PackageNotFoundError:
        from multibox import __version__

        return __version__


# Each command's module and function (multibox/commands/), imported when it runs, so `multibox --help` and config
# errors answer before torch loads. The function takes the parsed arguments and returns the exit status.
COMMANDS = {
    "train": "train:train_command",
    "eval": "evaluate:eval_command",
    "predict": "predict:predict_command",
    "data": "data:data_command",
    "demo": "demo:demo_command",
    "summary": "summary:summary_command",
    "export": "export:export_command",
    "bench": "bench:bench_command",
    "config": "config:config_command",
    "runs": "runs:runs_command",
    "tune": "tune:tune_args_command",
    "anchors": "anchors:anchors_command",
}


def _run(args: argparse.Namespace) -> int:
    module, function = COMMANDS[args.command].split(":")
    status = getattr(importlib.import_module(f"multibox.commands.{module}"), function)(args)
    return 0 if status is None else int(status)


def _one_line(error: MultiboxError) -> str:
    """The message itself, also when a DataLoader worker re-raised it wrapped in its traceback."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return last.split("MultiboxError: ", 1)[-1]


def _terminate(number: int, frame: object) -> None:
    raise KeyboardInterrupt


# A KEY=VALUE override: a dotted key (section.key...) then '='. Recognised wherever it stands on the line,
# so an option with an optional value (--resume, --plots) never takes an override as that value.
_OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)+=")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line, with KEY=VALUE overrides taken out first, in their order, wherever they stand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    overrides = [token for token in argv[:end] if _OVERRIDE.match(token)]
    rest = [token for token in argv[:end] if not _OVERRIDE.match(token)] + argv[end:]
    parser = _parser()
    args = parser.parse_args(rest)
    if overrides and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(overrides)} (this command takes no KEY=VALUE overrides)")
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides or []) + overrides
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    for noise in (
        ".*does not have many workers.*",
        ".*exists and is not empty.*",
        ".*LeafSpec.*is deprecated.*",
        ".*Total length of .* across ranks is zero.*",
        ".*training_step.*returned `None`.*",
    ):
        warnings.filterwarnings("ignore", message=noise)
    if threading.current_thread() is threading.main_thread():  # SIGTERM (SLURM, Kubernetes) as Ctrl-C: exit 130
        signal.signal(signal.SIGTERM, _terminate)
    from multibox.commands.warning_output import install

    previous = warnings.showwarning
    printer = install()  # restored below: main() may run inside another program (a notebook, a test)
    try:
        return _run(args)
    except MultiboxError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # a disk, permission or path problem no check above foresaw: still one line
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{os_reason(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
        summary = printer.summary()
        if summary is not None:
            print(summary, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
