"""A torchinfo-style model summary: layers, parameters, default boxes, compute and memory.

Nothing real is computed. The detector is built on the meta device (tensors with shapes but no
storage), and one forward pass of the whole SSD (backbone and head) runs there with forward hooks
recording every module's output shapes and ``FlopCounterMode`` counting multiply-adds. A
summary of an 8-megapixel input therefore costs the same milliseconds as one of 300x300, and
needs neither a GPU nor a dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from multibox.config import Config
from multibox.errors import MultiboxError
from multibox.models.detector import build_detector

DEFAULT_NUM_CLASSES = 80  # COCO's, used when model.num_classes is unset (training takes it from the dataset)
_MB = 1e6  # decimal megabytes, as torchinfo reports them


def _tensors(output: Any) -> list[Tensor]:
    """The tensors in a module's output (a tensor, or tuples/lists/dicts of them), in order."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def summarize(config: Config, depth: int = 3) -> dict[str, Any]:
    """Summary of the configured detector for ``data.batch_size`` images of ``data.input_size``.

    Returns a JSON-able dict (lists, ints, floats, strings):

    - ``layers``: modules up to ``depth`` levels below the SSD (the SSD itself is depth 0), in
      definition order, each ``{name, type, depth, output_shapes, calls, params, trainable_params}``:
      ``name`` is the dotted path in the state dict (``""`` for the SSD), ``output_shapes`` one
      ``[N, ...]`` per output tensor of the module's first call (``[]`` for containers that are
      never called, such as ``ModuleList``), ``params`` counts the module and all its submodules.
    - ``total_params``, ``trainable_params``, ``param_bytes`` (float32 weights).
    - ``feature_sizes`` ``[[H_l, W_l]]``, ``boxes_per_location``, ``boxes_per_level``, ``num_boxes``.
    - ``macs`` for the batch and ``macs_per_image``: multiply-adds of convolutions and matrix
      products (``FlopCounterMode`` FLOPs / 2); normalisation, activations and the box reshapes
      are not counted, as in torchvision's published GMAC figures.
    - ``input_bytes``; ``activation_bytes``: the sum of the output sizes of every leaf-module call
      in one forward pass (what a training step keeps for the backward pass, up to in-place ops
      and framework overhead); ``forward_backward_bytes`` = 2x that, the usual rough estimate of
      activations plus their gradients (torchinfo's "Forward/backward pass size").

    Raises:
        MultiboxError: the configuration does not build (unknown model, input too small, ...).
    """
    if depth < 0:
        raise MultiboxError(f"--depth: must be 0 or more, got {depth}")
    num_classes, classes_from = config.model.num_classes, "model.num_classes"
    if num_classes is None:
        num_classes, classes_from = data_class_count(config) or (DEFAULT_NUM_CLASSES, "")
    batch = config.data.batch_size
    height, width = (int(v) for v in config.data.input_size)
    with torch.device("meta"):  # no weights are allocated or initialised, even for VGG's 35M
        detector, spec = build_detector(config, num_classes, load_weights=False)  # meta tensors: nothing to load into
    model = detector.model.eval()  # eval: BatchNorm would refuse a batch of 1 on 1x1 maps

    names = {module: name for name, module in model.named_modules()}
    calls: dict[str, list[list[list[int]]]] = {}
    leaf_bytes = [0]  # output bytes, summed over leaf-module calls

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        tensors = _tensors(output)
        calls.setdefault(names[module], []).append([list(t.shape) for t in tensors])
        if not any(True for _ in module.children()):
            leaf_bytes[0] += sum(t.numel() * t.element_size() for t in tensors)

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.empty(batch, 3, height, width, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    macs = counter.get_total_flops() // 2

    layers = []
    for name, module in model.named_modules():
        level = 0 if name == "" else name.count(".") + 1
        if level > depth:
            continue
        params = list(module.parameters())
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "depth": level,
                "output_shapes": calls.get(name, [[]])[0],
                "calls": len(calls.get(name, [])),
                "params": sum(p.numel() for p in params),
                "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            }
        )

    parameters = list(model.parameters())
    total = sum(p.numel() for p in parameters)
    return {
        "model": config.model.name,
        "num_classes": num_classes,
        "num_classes_from_config": config.model.num_classes is not None,
        "num_classes_source": classes_from or f"default ({DEFAULT_NUM_CLASSES}, COCO's)",
        "batch_size": batch,
        "input_size": [height, width],
        "depth": depth,
        "layers": layers,
        "total_params": total,
        "trainable_params": sum(p.numel() for p in parameters if p.requires_grad),
        "param_bytes": sum(p.numel() * p.element_size() for p in parameters),
        "feature_sizes": [[int(h), int(w)] for h, w in spec.feature_sizes],
        "boxes_per_location": [int(b) for b in spec.layout.boxes_per_location()],
        "boxes_per_level": [int(b) for b in spec.boxes_per_level],
        "num_boxes": int(spec.num_boxes),
        "macs": int(macs),
        "macs_per_image": macs / batch,
        "input_bytes": batch * 3 * height * width * 4,
        "activation_bytes": leaf_bytes[0],
        "forward_backward_bytes": 2 * leaf_bytes[0],
    }


def _shapes(shapes: list[list[int]]) -> str:
    return "\n".join(f"[{', '.join(str(v) for v in shape)}]" for shape in shapes) or "--"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / _MB:,.2f}"


def _macs(macs: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if macs >= scale:
            return f"{macs / scale:,.2f} {unit}"
    return f"{macs:,.0f}"


def data_class_count(config: Config) -> tuple[int, str] | None:
    """(count, where from) of the classes training would take from the data, read cheaply (no image is opened):
    data.class_names, a COCO annotation file's categories, or a YOLO data .yaml's names; None when not at hand."""
    from multibox.data.formats.common import read_class_names

    data = config.data
    try:
        if data.class_names is not None:
            return len(read_class_names(data.class_names) or []), "data.class_names"
        split = data.train
        if split is None:
            return None
        if data.format == "coco" and split.annotations is not None and Path(split.annotations).is_file():
            categories = json.loads(Path(split.annotations).read_text(encoding="utf-8")).get("categories") or []
            return (len(categories), str(split.annotations)) if categories else None
        if data.format == "yolo":
            for candidate in (Path(split.images), Path(split.images) / "data.yaml"):
                if candidate.suffix.lower() in (".yaml", ".yml") and candidate.is_file():
                    return len(read_class_names(candidate) or []), str(candidate)
    except (MultiboxError, OSError, ValueError, AttributeError):
        return None
    return None


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`summarize`'s dict as tables (to ``console``, or a new one on stdout)."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # pipes and files: don't squeeze the table into 80 columns
            console = Console(width=160)
    batch, (height, width) = summary["batch_size"], summary["input_size"]
    console.print(
        f"{summary['model']}: input [{batch}, 3, {height}, {width}], "
        f"{summary['num_classes']} foreground classes + background",
        markup=False,
        highlight=False,
    )
    source = summary.get("num_classes_source", "")
    if not summary["num_classes_from_config"] and source.startswith("default"):
        console.print(
            f"model.num_classes is not set: assumed {DEFAULT_NUM_CLASSES} (training takes it from the "
            "dataset, which is not at hand)",
            markup=False,
            highlight=False,
        )
    elif not summary["num_classes_from_config"]:
        console.print(f"classes: {summary['num_classes']}, from {source}", markup=False, highlight=False)

    layers = Table(caption="Param #: parameters of the module and all its submodules")
    layers.add_column("Layer")
    layers.add_column("Type")
    layers.add_column("Output shape")
    layers.add_column("Param #", justify="right")
    for layer in summary["layers"]:
        label = "  " * layer["depth"] + (layer["name"] or summary["model"])
        params = f"{layer['params']:,}" if layer["params"] else "--"
        layers.add_row(label, layer["type"], _shapes(layer["output_shapes"]), params)
    console.print(layers)

    total, trainable = summary["total_params"], summary["trainable_params"]
    fwd, fwd_bwd = summary["activation_bytes"], summary["forward_backward_bytes"]
    totals = Table(title="Totals", show_header=False, title_justify="left")
    totals.add_column(justify="left")
    totals.add_column(justify="right")
    totals.add_column(justify="left", style="dim")
    for row in (
        ("Total params", f"{total:,}", ""),
        ("Trainable params", f"{trainable:,}", ""),
        ("Non-trainable params", f"{total - trainable:,}", ""),
        ("Params size (MB)", _mb(summary["param_bytes"]), "float32 weights"),
        ("Mult-adds per image", _macs(summary["macs_per_image"]), "convolutions and matrix products; FLOPs = 2 x MACs"),
        (f"Mult-adds, batch of {batch}", _macs(summary["macs"]), ""),
        ("Input size (MB)", _mb(summary["input_bytes"]), f"[{batch}, 3, {height}, {width}] float32"),
        ("Forward pass size (MB)", _mb(fwd), "sum of every leaf module's output, float32"),
        ("Forward/backward pass size (MB)", _mb(fwd_bwd), "estimate: 2 x forward (activations + their gradients)"),
        (
            "Estimated total size (MB)",
            _mb(summary["input_bytes"] + fwd_bwd + summary["param_bytes"]),
            "input + forward/backward + params; excludes optimizer state",
        ),
    ):
        totals.add_row(*row)
    console.print(totals)

    boxes = Table(title="Default boxes", title_justify="left")
    for heading in ("Level", "Feature map (H x W)", "Boxes per location", "Boxes"):
        boxes.add_column(heading, justify="right")
    levels = zip(summary["feature_sizes"], summary["boxes_per_location"], summary["boxes_per_level"], strict=True)
    for level, ((h, w), per_location, count) in enumerate(levels):
        boxes.add_row(str(level), f"{h} x {w}", str(per_location), f"{count:,}")
    boxes.add_section()
    boxes.add_row("total", "", "", f"{summary['num_boxes']:,}")
    console.print(boxes)
