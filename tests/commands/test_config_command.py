"""`multibox --version`, `config show` and `config init`."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multibox.cli import main
from multibox.commands.config import EXAMPLE_SPLITS, init_config
from multibox.config import load_config

# The console script of the Python running the tests (make test does not put .venv/bin on PATH).
MULTIBOX = str(Path(sys.executable).parent / "multibox")


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"multibox {version('multibox')}"


def test_show_prints_the_resolved_config_with_defaults(tmp_path, capsys, monkeypatch):
    (tmp_path / "cfg.yaml").write_text("data:\n  train: {images: imgs, annotations: a.json}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "train.epochs=3", "-c", "cfg.yaml", "model.name=ssd512_vgg16"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 3 and shown["model"]["name"] == "ssd512_vgg16"
    assert shown["eval"]["nms_threshold"] == 0.45  # defaults filled in
    assert shown["data"]["train"]["images"] == str(tmp_path / "imgs")


@pytest.mark.parametrize("fmt", sorted(EXAMPLE_SPLITS))
def test_init_validates_as_is_and_comments_every_key(tmp_path, fmt):
    text = init_config("ssdlite320_mobilenet_v3_large", fmt)
    path = tmp_path / "my.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.model.name == "ssdlite320_mobilenet_v3_large" and config.data.format == fmt
    assert "# Non-finite loss" not in text and "# Where config, checkpoints, logs and metrics go." in text
    raw = yaml.safe_load(text)
    assert set(raw["train"]) == set(config.train.model_dump())  # every key is written out


def test_init_through_the_console_script(tmp_path):
    out = subprocess.run([MULTIBOX, "config", "init", "--format", "voc"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["data"]["train"]["annotations"] == "train"
    bad = subprocess.run([MULTIBOX, "config", "init", "--model", "nope"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "ssd300_vgg16" in bad.stderr
