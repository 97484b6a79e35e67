"""`summarize` / `multibox summary` against published figures: parameters, boxes, mult-adds, shapes."""

import json
import math
from pathlib import Path

import pytest

from multibox.cli import main
from multibox.config import load_config
from multibox.errors import MultiboxError
from multibox.models.summary import summarize

CONFIGS = Path(__file__).resolve().parents[2] / "multibox" / "configs"
SSD300 = ["model.name=ssd300_vgg16", "data.input_size=[300,300]", "model.num_classes=90", "data.batch_size=2"]


@pytest.fixture(scope="module")
def ssd300() -> dict:
    return summarize(load_config(None, SSD300), depth=99)


def _layer(summary: dict, name: str) -> dict:
    return next(layer for layer in summary["layers"] if layer["name"] == name)


def test_ssd300_vgg16_matches_torchvision(ssd300):
    assert ssd300["total_params"] == ssd300["trainable_params"] == 35_641_826
    assert ssd300["num_boxes"] == 8732
    assert ssd300["feature_sizes"] == [[38, 38], [19, 19], [10, 10], [5, 5], [3, 3], [1, 1]]
    assert ssd300["boxes_per_location"] == [4, 6, 6, 6, 4, 4]
    assert sum(ssd300["boxes_per_level"]) == 8732
    assert ssd300["macs_per_image"] == pytest.approx(34.86e9, rel=0.02)  # torchvision's 34.86 GMAC
    assert ssd300["macs"] == pytest.approx(2 * ssd300["macs_per_image"])
    assert ssd300["param_bytes"] == 4 * 35_641_826


def test_table_has_every_modules_output_shape(ssd300):
    assert _layer(ssd300, "")["output_shapes"] == [[2, 8732, 4], [2, 8732, 91]]
    assert _layer(ssd300, "head")["output_shapes"] == [[2, 8732, 4], [2, 8732, 91]]
    assert _layer(ssd300, "head.classification_head")["output_shapes"] == [[2, 8732, 91]]
    assert _layer(ssd300, "head.regression_head.module_list.0")["output_shapes"] == [[2, 16, 38, 38]]
    assert _layer(ssd300, "head.classification_head.module_list.1")["output_shapes"] == [[2, 6 * 91, 19, 19]]
    backbone = _layer(ssd300, "backbone")["output_shapes"]
    assert [shape[-2:] for shape in backbone] == ssd300["feature_sizes"]
    assert _layer(ssd300, "head.classification_head.module_list")["output_shapes"] == []  # never called itself
    assert _layer(ssd300, "head")["params"] == sum(
        _layer(ssd300, f"head.{part}_head")["params"] for part in ("classification", "regression")
    )


def test_activation_bytes_are_the_leaf_outputs(ssd300):
    names = [layer["name"] for layer in ssd300["layers"]]
    leaves = [
        layer
        for layer in ssd300["layers"]
        if layer["name"] and not any(n.startswith(layer["name"] + ".") for n in names)
    ]
    assert all(layer["calls"] == 1 for layer in leaves)
    expected = sum(4 * math.prod(shape) for layer in leaves for shape in layer["output_shapes"])
    assert ssd300["activation_bytes"] == expected
    assert ssd300["forward_backward_bytes"] == 2 * expected
    assert ssd300["input_bytes"] == 2 * 3 * 300 * 300 * 4


def test_ssdlite320_mobilenet_v3_large_matches_torchvision():
    summary = summarize(
        load_config(
            None,
            [
                "model.name=ssdlite320_mobilenet_v3_large",
                "data.input_size=[320,320]",
                "model.num_classes=90",
                "data.batch_size=1",
            ],
        )
    )
    assert summary["total_params"] == 3_440_060
    assert summary["macs_per_image"] == pytest.approx(0.58e9, rel=0.05)  # torchvision's 0.58 GMAC
    assert summary["num_boxes"] == 3234


def test_depth_limits_the_layers():
    config = load_config(None, ["model.name=ssd300_vgg16"])
    assert [layer["name"] for layer in summarize(config, depth=0)["layers"]] == [""]
    assert [layer["name"] for layer in summarize(config, depth=1)["layers"]] == ["", "backbone", "head"]
    assert max(layer["depth"] for layer in summarize(config)["layers"]) == 3
    with pytest.raises(MultiboxError, match="depth"):
        summarize(config, depth=-1)


def test_non_square_input_and_default_class_count():
    summary = summarize(load_config(None, ["data.input_size=[300,500]", "data.batch_size=3"]))
    assert summary["num_classes"] == 80 and not summary["num_classes_from_config"]
    assert summary["input_size"] == [300, 500]
    assert summary["feature_sizes"][0] == [38, 63]
    assert _layer(summary, "")["output_shapes"] == [[3, summary["num_boxes"], 4], [3, summary["num_boxes"], 81]]
    assert summary["num_boxes"] == sum(
        h * w * b for (h, w), b in zip(summary["feature_sizes"], summary["boxes_per_location"], strict=True)
    )


def test_8_megapixel_input_costs_nothing_real():
    summary = summarize(load_config(None, ["data.input_size=[2160,3840]", "data.batch_size=8"]))
    assert summary["feature_sizes"][0] == [270, 480]
    assert summary["macs_per_image"] > 3e12  # would take minutes on a CPU if it were real
    assert summary["activation_bytes"] > 100e9  # 160 GB of float32 activations for 8 images


def test_too_small_input_is_a_one_line_error():
    with pytest.raises(MultiboxError, match="data.input_size"):
        summarize(load_config(None, ["data.input_size=[32,32]"]))


def test_cli_prints_the_tables(capsys):
    assert main(["summary", "-c", str(CONFIGS / "ssd300_vgg16_coco.yaml"), "data.batch_size=4"]) == 0
    out = capsys.readouterr().out
    for text in (
        "Output shape",
        "Param #",
        "head.classification_head",
        "[4, 8732, 81]",
        "Total params",
        "Mult-adds per image",
        "34.",
        "Forward/backward pass size (MB)",
        "38 x 38",
        "8,732",
        "model.num_classes is not set: assumed 80",
    ):
        assert text in out, text


def test_cli_json_matches_summarize(capsys):
    config, overrides = CONFIGS / "ssd300_vgg16_coco.yaml", ["data.input_size=[300,400]"]
    assert main(["summary", "-c", str(config), *overrides, "--json", "--depth", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == summarize(load_config(config, overrides), depth=2)


def test_cli_bad_config_key_exits_2(capsys):
    assert main(["summary", "-c", str(CONFIGS / "demo.yaml"), "model.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.no_such_key" in err and len(err.strip().splitlines()) == 1


def test_ssd_resnet50_cognata_8mp_reproduces_the_seed_summary():
    """The seed's torchinfo table: batch 4, 10 scores per box."""
    summary = summarize(load_config(CONFIGS / "ssd_resnet50_cognata_8mp.yaml", ["data.batch_size=4"]))
    assert summary["num_boxes"] == 788_144
    assert summary["total_params"] == 14_059_236
    assert summary["feature_sizes"] == [[270, 480], [135, 240], [68, 120], [34, 60], [32, 58], [30, 56]]
    assert summary["input_bytes"] / 1e6 == pytest.approx(398.13, abs=0.01)  # "Input size (MB): 398.13"
    assert summary["param_bytes"] / 1e6 == pytest.approx(56.24, abs=0.01)  # "Params size (MB): 56.24"
    assert summary["macs"] / 1e12 == pytest.approx(5.56, rel=0.01)  # "Total mult-adds (T): 5.56"


def test_class_count_is_read_from_the_data_when_at_hand(tmp_path: Path, capsys):
    """Issue 14 item 17: summary assumed 80 classes although the annotation file said 5."""
    from multibox.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "d", 2, (32, 32))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data:\n  train: {{images: {root}/images, annotations: {root}/annotations.json}}\n"
        "  input_size: [64, 64]\nmodel: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25}\n"
    )
    assert main(["summary", "-c", str(config), "--depth", "0"]) == 0
    out = capsys.readouterr().out
    assert "5 foreground classes" in out and f"from {root / 'annotations.json'}" in out


def test_pretrained_weights_in_the_config_are_not_fetched(monkeypatch, tmp_path):
    """A recipe that starts from ImageNet weights still summarises offline: the meta-device model loads nothing."""
    monkeypatch.setenv("MULTIBOX_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: loading would have to download
    config = load_config(None, ["model.name=ssd300_vgg16", "model.backbone_weights=imagenet", "model.num_classes=21"])
    assert summarize(config)["num_boxes"] == 8732
