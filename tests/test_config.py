"""Config schema: defaults, YAML/JSON loading, dotted overrides, one-line errors."""

import json

import pytest

from multibox.config import Config, apply_overrides, load_config, save_config
from multibox.errors import MultiboxError


def test_yaml_and_json_load_to_the_same_config(tmp_path):
    raw = {"data": {"input_size": [128, 160], "batch_size": 4}, "train": {"epochs": 3}}
    (tmp_path / "c.json").write_text(json.dumps(raw))
    (tmp_path / "c.yaml").write_text("data:\n  input_size: [128, 160]\n  batch_size: 4\ntrain:\n  epochs: 3\n")
    assert load_config(tmp_path / "c.json") == load_config(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").data.input_size == (128, 160)


def test_dotted_overrides_parse_values():
    raw = apply_overrides(
        {}, ["train.epochs=2", "data.batch_size=8", "optimizer.lr=0.01", "anchors.aspect_ratios=[[2],[2,3]]"]
    )
    config = Config.model_validate(raw)
    assert config.train.epochs == 2 and config.data.batch_size == 8 and config.optimizer.lr == 0.01
    assert config.anchors.aspect_ratios == [[2.0], [2.0, 3.0]]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epoch=2", r"train\.epoch: unknown key"),
        ("data.batch_size=zero", r"data\.batch_size: Input should be a valid integer"),
        ("optimizer.lr=-1", r"optimizer\.lr: Input should be greater than 0"),
        ("model.name=yolo", r"model\.name: Input should be"),
        ("train.report=maybe", r"train\.report: Input should be a valid boolean"),
        ("bogus=1", r"bogus: unknown key"),
        ("train.epochs", r"expected KEY=VALUE"),
    ],
)
def test_bad_values_give_one_line_errors_naming_the_key(tmp_path, override, expected):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 1\n")
    with pytest.raises(MultiboxError, match=expected) as info:
        load_config(path, [override])
    assert "\n" not in str(info.value)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(MultiboxError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(MultiboxError, match=r"bad.yaml:2:1: cannot parse config"):
        load_config(bad)


def test_saved_config_loads_back_identically(tmp_path):
    config = load_config(None, ["train.epochs=4", "data.input_size=[96,128]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_data_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["data.train.images=imgs", "data.train.annotations=a.json"])
    assert config.data.train.images == tmp_path / "imgs"


def test_yaml_syntax_error_gives_line_and_column(tmp_path) -> None:
    """Issue 14 item 15."""
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  input_size: [1, 2\nmodel: x\n")
    with pytest.raises(MultiboxError, match=r"bad.yaml:3:6: cannot parse config: "):
        load_config(path)


def test_an_overrides_error_names_the_override_without_pydantic_prefix(tmp_path) -> None:
    """Issue 14 item 15: `error: coco.yaml: data.input_size: ...` blamed the file for a command-line value."""
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 1}\n")
    with pytest.raises(MultiboxError) as raised:
        load_config(path, ["data.input_size=[16,16]"])
    assert (
        str(raised.value) == "override data.input_size=[16,16]: data.input_size: both sides must be at least 32 pixels"
    )
    with pytest.raises(MultiboxError, match=r"^.*c.yaml: train.epochs: "):
        path.write_text("train: {epochs: 0}\n")
        load_config(path, ["data.batch_size=2"])
