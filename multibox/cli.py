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
from types import ModuleType

from multibox.errors import MultiboxError
from multibox.outputs import os_reason


def _parser(command: str | None) -> argparse.ArgumentParser:
    """Every command with its one-line help; only `command`'s module is imported, to add its options."""
    parser = argparse.ArgumentParser(prog="multibox", description="Train, evaluate and run SSD object detectors.")
    parser.add_argument("--version", action="version", version=f"multibox {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (target, help_text) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text)
        if name == command:
            _module(target).add_arguments(subparser)
    return parser


def _version() -> str:
    """The installed distribution's version (what pip reports), the source's when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multibox")
    except PackageNotFoundError:
        from multibox import __version__

        return __version__


# Each command: its module in multibox/commands/ and function, and its line in `multibox --help`. A module is
# imported only when its command runs (it adds its own options with ``add_arguments``), so `multibox --help` and
# config errors answer before torch loads. The function takes the parsed arguments and returns the exit status.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train:train_command", "train a detector from a config"),
    "eval": ("evaluate:eval_command", "COCO (or VOC) metrics of a checkpoint or exported model on the val set"),
    "predict": ("predict:predict_command", "detect objects in an image, a folder of images or a video"),
    "data": ("data:data_command", "dataset tools"),
    "demo": ("demo:demo_command", "synthetic data, training, evaluation and predictions, end to end on the CPU"),
    "summary": (
        "summary:summary_command",
        "layers, parameters, default boxes, mult-adds and memory of a config's model",
    ),
    "export": (
        "export:export_command",
        "export to ONNX, TorchScript or OpenVINO (FP32, FP16, INT8), checked against PyTorch",
    ),
    "bench": (
        "bench:bench_command",
        "latency and throughput per stage and runtime; with --formats, accuracy and speed per deployment format",
    ),
    "anchors": ("anchors:anchors_command", "default-box tools"),
    "config": ("config:config_command", "print a resolved config, or write a commented starting one"),
    "runs": ("runs:runs_command", "compare runs on disk"),
    "tune": ("tune:tune_args_command", "hyper-parameter search with Optuna; each trial is a run in DIR/trial_NNN"),
}


def _module(target: str) -> ModuleType:
    return importlib.import_module(f"multibox.commands.{target.split(':')[0]}")


def _run(args: argparse.Namespace) -> int:
    target = COMMANDS[args.command][0]
    status = getattr(_module(target), target.split(":")[1])(args)
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
    command = next((token for token in rest if not token.startswith("-")), None)
    parser = _parser(command)
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
