"""KEY=VALUE overrides are recognised wherever they stand: never an option's value (issue 13, item 4)."""

import pytest

from multibox.cli import main, parse_args


def test_resume_without_a_path_does_not_take_the_override():
    args = parse_args(["train", "-c", "cfg.yaml", "--resume", "train.epochs=3"])
    assert args.resume is True and args.overrides == ["train.epochs=3"]


def test_plots_without_a_folder_does_not_take_the_override():
    args = parse_args(["eval", "--weights", "b.ckpt", "--plots", "eval.nms_threshold=0.5", "--out", "m.json"])
    assert args.plots is True and args.overrides == ["eval.nms_threshold=0.5"]


def test_overrides_before_between_and_after_options_keep_their_order():
    args = parse_args(["train", "a.b=1", "-c", "cfg.yaml", "c.d=2", "--resume", "last.ckpt", "a.b=3"])
    assert args.overrides == ["a.b=1", "c.d=2", "a.b=3"] and args.resume == "last.ckpt"


def test_a_command_without_overrides_refuses_them(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["export", "--weights", "x.ckpt", "eval.nms_threshold=0.5"])
    assert stop.value.code == 2
    assert "takes no KEY=VALUE overrides" in capsys.readouterr().err


def test_demo_options_around_overrides():
    args = parse_args(["demo", "train.seed=1", "--out", "d", "train.epochs=1"])
    assert str(args.out) == "d" and args.overrides == ["train.seed=1", "train.epochs=1"]
