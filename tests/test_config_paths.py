"""How a config's relative paths resolve: from the config file's folder; overrides from the working directory."""

from pathlib import Path

import pytest

from multibox.config import load_config


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_paths_resolve_from_the_config_folder_normalised(tmp_path, monkeypatch):
    _write(
        tmp_path / "ds" / "cfg",
        "data:\n  train: {images: ../coco/train, annotations: ../coco/train/a.json}\n"
        "  class_names: names.txt\nmodel: {weights: w.ckpt}\n",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("ds/cfg/cfg.yaml"))
    assert config.data.train.images == tmp_path / "ds" / "coco" / "train"
    assert config.data.train.annotations == tmp_path / "ds" / "coco" / "train" / "a.json"
    assert config.data.class_names == tmp_path / "ds" / "cfg" / "names.txt"
    assert config.model.weights == str(tmp_path / "ds" / "cfg" / "w.ckpt")
    assert ".." not in str(config.data.train.images)
    assert config.train.output_dir == Path("runs/exp")  # outputs go where the command runs


def test_overrides_resolve_from_the_working_directory(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "cfg", "data:\n  train: {images: imgs, annotations: a.json}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(cfg, ["data.train.images=here/../mine", "data.val={images: v, annotations: v.json}"])
    assert config.data.train.images == tmp_path / "mine"
    assert config.data.train.annotations == tmp_path / "cfg" / "a.json"
    assert config.data.val.images == tmp_path / "v"


@pytest.mark.parametrize(
    ("fmt", "name", "file"),
    [("voc", "trainval", "sets/trainval.txt"), ("openimages", "validation", "sub-validation-annotations-bbox.csv")],
)
def test_split_names_stay_names(tmp_path, monkeypatch, fmt, name, file):
    cfg = _write(
        tmp_path / "cfg",
        f"data:\n  format: {fmt}\n  train: {{images: root, annotations: {name}}}\n"
        f"  val: {{images: root, annotations: {file}}}\n",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(cfg)
    assert str(config.data.train.annotations) == name
    assert config.data.val.annotations == tmp_path / "cfg" / file
    assert str(load_config(cfg, [f"data.train.annotations={name}"]).data.train.annotations) == name
