"""Every command fed the mess users produce: a one-line `error:` naming the problem (exit 2) or a
skip with a warning naming the file; never a traceback, never a lost or overwritten file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from multibox.cli import main
from multibox.data.dataset import DetectionDataset, read_image
from multibox.data.formats.coco import load_coco
from multibox.data.formats.common import image_size
from multibox.data.synth import make_synthetic_dataset
from multibox.data.transforms import build_eval_transform

MODEL = {"name": "ssdlite320_mobilenet_v3_large", "width_mult": 0.25}


def fails(capsys, argv: list, *needles: str) -> str:
    """Run the CLI; assert exit 2 and exactly one stderr line, `error: ...` holding every needle."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("bad") / "data", 6, (64, 64), seed=5)


def write_config(folder: Path, data_dir: Path, annotations: Path | None = None, **sections) -> Path:
    config = {
        "data": {
            "input_size": [64, 64],
            "batch_size": 2,
            "num_workers": 0,
            "val_split": 0.34,
            "train": {
                "images": str(data_dir / "images"),
                "annotations": str(annotations or data_dir / "annotations.json"),
            },
        },
        "model": MODEL,
        "train": {"epochs": 1, "output_dir": str(folder / "run"), "log_every_n_steps": 1},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def annotations_with(folder: Path, data_dir: Path, change) -> Path:
    raw = json.loads((data_dir / "annotations.json").read_text())
    change(raw)
    path = folder / "annotations.json"
    path.write_text(json.dumps(raw))
    return path


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ["missing.yaml", "not found"]),
        ("", ["bad.yaml", "empty"]),
        ("data: [1, 2\n", ["bad.yaml", "cannot parse"]),
        ("train:\n  epochs: many\n", ["bad.yaml", "train.epochs", "integer"]),
        ("train:\n  epoks: 3\n", ["bad.yaml", "train.epoks", "unknown key"]),
        ("- just\n- a list\n", ["bad.yaml", "mapping"]),
    ],
)
@pytest.mark.parametrize("command", ["train", "summary", "anchors"])
def test_bad_configs(tmp_path, capsys, content, needles, command):
    path = tmp_path / ("missing.yaml" if content is None else "bad.yaml")
    if content is not None:
        path.write_text(content)
    argv = {
        "train": ["train", "-c", path],
        "summary": ["summary", "-c", path],
        "anchors": ["anchors", "fit", "-c", path],
    }
    fails(capsys, argv[command], *needles)


def test_unknown_override_key_and_bad_value(tmp_path, capsys, dataset):
    config = write_config(tmp_path, dataset)
    fails(capsys, ["train", "-c", config, "train.epoks=3"], "train.epoks", "unknown key")
    fails(capsys, ["train", "-c", config, "data.input_size=big"], "data.input_size")


# --- annotations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ["not found"]),
        ("", ["invalid JSON"]),
        ('{"images": [', ["invalid JSON"]),
    ],
)
def test_missing_empty_and_corrupt_annotation_files(tmp_path, capsys, dataset, content, needles):
    annotations = tmp_path / "ann.json"
    if content is not None:
        annotations.write_text(content)
    fails(capsys, ["train", "-c", write_config(tmp_path, dataset, annotations)], str(annotations), *needles)


@pytest.mark.parametrize("file_name", ["../../../etc/passwd", "/etc/hostname", "sub/../../outside.jpg"])
def test_file_names_leaving_the_dataset_are_refused(tmp_path, capsys, dataset, file_name):
    annotations = annotations_with(tmp_path, dataset, lambda raw: raw["images"][0].update(file_name=file_name))
    for argv in (
        ["train", "-c", write_config(tmp_path, dataset, annotations)],
        [
            "data",
            "convert",
            "--from",
            "coco",
            "--to",
            "yolo",
            dataset / "images",
            tmp_path / "out",
            "--annotations",
            annotations,
        ],
    ):
        fails(capsys, argv, str(annotations), repr(file_name), "outside")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "out").exists()
    # `data validate` lists it in its table instead (exit 1, not 2)
    assert main(["data", "validate", "--images", str(dataset / "images"), "--annotations", str(annotations)]) == 1
    assert "unsafe-file-name" in capsys.readouterr().out


def test_unknown_classes(tmp_path, capsys, dataset):
    annotations = annotations_with(tmp_path, dataset, lambda raw: raw["annotations"][0].update(category_id=999))
    fails(
        capsys,
        ["train", "-c", write_config(tmp_path, dataset, annotations)],
        str(annotations),
        "unknown category id 999",
    )
    yolo = tmp_path / "yolo"
    assert main(["data", "convert", "--from", "coco", "--to", "yolo", str(dataset), str(yolo)]) == 0
    label = sorted((yolo / "labels").rglob("*.txt"))[0]
    label.write_text("17 0.5 0.5 0.2 0.2\n")
    config = write_config(tmp_path, dataset, data={"format": "yolo", "train": {"images": str(yolo)}})
    fails(capsys, ["data", "stats", "-c", config], f"{label}:1", "class 17")


def test_zero_size_and_out_of_bounds_boxes_are_dropped_or_clipped(tmp_path, dataset):
    def change(raw):
        raw["annotations"][0]["bbox"] = [5, 5, 0, 10]  # zero width: dropped at load
        first_of_image_1 = next(a for a in raw["annotations"] if a["image_id"] == raw["images"][1]["id"])
        first_of_image_1["bbox"] = [500, 500, 10, 10]  # entirely outside: the image is skipped
        first_of_image_2 = next(a for a in raw["annotations"] if a["image_id"] == raw["images"][2]["id"])
        first_of_image_2["bbox"] = [40, 40, 60, 60]  # partly outside: clipped to the image

    annotations = annotations_with(tmp_path, dataset, change)
    with pytest.warns(UserWarning, match="dropped 1 boxes with zero or negative width/height"):
        records = load_coco(dataset / "images", annotations)
    items = DetectionDataset(records, build_eval_transform((64, 64)), (64, 64), skip_bad=True)
    with pytest.warns(UserWarning, match="skipped, a box lies entirely outside the 64x64 image"):
        assert items[1].file.endswith(records.records[1].file.name)
    _, target = items[2]
    assert target["boxes"].min() >= 0 and target["boxes"].max() <= 1
    assert torch.isclose(target["boxes"][0, 2:], torch.tensor([1.0, 1.0])).all()  # x2, y2 clipped to the border


# --- images --------------------------------------------------------------------------------------


def _mess_up_images(folder: Path) -> dict[str, Path]:
    """Damage a copy of the dataset: truncated, empty, garbage and missing files; odd but valid formats."""
    files = sorted((folder / "images").iterdir())
    files[0].write_bytes(
        files[0].read_bytes()[:300]
    )  # truncated JPEG: OpenCV alone would decode it, grey below the cut
    files[1].write_bytes(b"")
    files[2].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files[3].unlink()
    image = cv2.imread(str(files[4]))
    cv2.imwrite(str(files[4]), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))  # grayscale: readable
    return {"truncated": files[0], "empty": files[1], "garbage": files[2], "missing": files[3], "gray": files[4]}


def test_training_and_eval_skip_unreadable_images_with_a_warning(tmp_path, dataset, one_thread, capsys):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = _mess_up_images(data)
    assert (
        main(["data", "validate", "--images", str(data / "images"), "--annotations", str(data / "annotations.json")])
        == 1
    )
    config = write_config(tmp_path, data, data={"val_split": 0.5})
    assert main(["train", "-c", str(config)]) == 2  # most images are bad: stop (data.max_skipped_fraction, issue 14)
    config = write_config(tmp_path, data, data={"val_split": 0.5, "max_skipped_fraction": 1.0})
    assert main(["train", "-c", str(config)]) == 0
    warned = capsys.readouterr().err  # the CLI prints each warning as `warning: FILE: problem`
    for name in ("truncated", "empty", "garbage", "missing"):
        assert f"{bad[name]}: skipped" in warned, name
    assert "truncated JPEG" in warned
    assert f"{bad['gray']}: skipped" not in warned
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "run" / "report.md").is_file()
    # evaluating over the damaged images leaves the unreadable ones out instead of crashing
    assert (
        main(
            [
                "eval",
                "--weights",
                str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
                "-c",
                str(config),
                "data.val_split=0.99",
            ]
        )
        == 0
    )


def test_grayscale_rgba_and_16_bit_images_read_as_8_bit_rgb(tmp_path):
    gray, rgba, deep = tmp_path / "gray.png", tmp_path / "rgba.png", tmp_path / "deep.png"
    cv2.imwrite(str(gray), np.full((20, 30), 90, np.uint8))
    cv2.imwrite(str(rgba), np.dstack([np.full((20, 30, 3), 200, np.uint8), np.zeros((20, 30), np.uint8)]))
    cv2.imwrite(str(deep), np.full((20, 30, 3), 40000, np.uint16))
    for path, value in ((gray, 90), (rgba, 200), (deep, 40000 >> 8)):
        image = read_image(path, (20, 30))
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8
        assert abs(int(image[0, 0, 0]) - value) <= 1, path


def _exif_rotated_jpeg(path: Path) -> None:
    """Stored 40 high x 80 wide, white left half; EXIF orientation 6 shows it 80 high x 40 wide, white on top."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(path, exif=exif.tobytes(), quality=95)


def test_exif_rotated_images_follow_their_annotations(tmp_path, capsys, tiny_checkpoint):
    path = tmp_path / "rotated.jpg"
    _exif_rotated_jpeg(path)
    assert image_size(path, "test") == (40, 80)  # (width, height) as displayed
    shown = read_image(path, (80, 40))  # annotations made on the displayed image (labelling tools, browsers)
    assert shown.shape == (80, 40, 3) and shown[:40].mean() > 200 and shown[40:].mean() < 50
    stored = read_image(path, (40, 80))  # annotations made on the stored pixels (older COCO-style tools)
    assert stored.shape == (40, 80, 3) and stored[:, :40].mean() > 200
    with pytest.raises(Exception, match="image is 80x40 but its annotations say 50x50; not decoded"):  # header size
        read_image(path, (50, 50))
    # predict shows and reports the image as displayed
    out = tmp_path / "pred"
    assert (
        main(["predict", "--weights", str(tiny_checkpoint), "--source", str(path), "--out", str(out), "--conf", "0"])
        == 0
    )
    assert cv2.imread(str(out / "rotated.jpg")).shape[:2] == (80, 40)


def test_predict_skips_unreadable_images_and_leaves_the_source_alone(tmp_path, capsys, tiny_checkpoint, dataset):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = _mess_up_images(data)
    before = {p: p.read_bytes() for p in (data / "images").iterdir()}
    out = tmp_path / "pred"
    assert (
        main(["predict", "--weights", str(tiny_checkpoint), "--source", str(data / "images"), "--out", str(out)]) == 0
    )
    messages = capsys.readouterr().err  # the CLI prints each warning as `warning: FILE: problem`
    assert str(bad["empty"]) in messages and str(bad["garbage"]) in messages
    assert {p: p.read_bytes() for p in (data / "images").iterdir()} == before
    assert (out / "predictions.json").is_file()


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, tiny_checkpoint) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("ckpts")
    good = tiny_checkpoint.read_bytes()
    (folder / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "text.ckpt").write_text("this is not a checkpoint")
    torch.save({"model": torch.zeros(3)}, folder / "foreign.ckpt")
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.save(
        ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).state_dict(),
        folder / "torchvision.pth",
    )
    other = torch.load(tiny_checkpoint, weights_only=True)
    other["hyper_parameters"]["config"]["model"]["width_mult"] = 0.5  # the weights are of the 0.25 model
    torch.save(other, folder / "other_model.ckpt")
    return {
        "truncated": (folder / "truncated.ckpt", "not a readable checkpoint"),
        "empty": (folder / "empty.ckpt", "empty file"),
        "text": (folder / "text.ckpt", "not a readable checkpoint"),
        "foreign": (folder / "foreign.ckpt", "not a multibox checkpoint"),
        "torchvision": (folder / "torchvision.pth", "not a multibox checkpoint"),
        "other_model": (folder / "other_model.ckpt", "weights do not fit"),
        "missing": (folder / "missing.ckpt", "checkpoint not found"),
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "foreign", "torchvision", "other_model", "missing"])
def test_bad_checkpoints(tmp_path, capsys, dataset, bad_checkpoints, kind):
    path, needle = bad_checkpoints[kind]
    for argv in (
        ["eval", "--weights", path],
        ["predict", "--weights", path, "--source", dataset / "images", "--out", tmp_path / "pred"],
        ["export", "--weights", path, "--out", tmp_path / "model.onnx"],
        ["bench", "--weights", path, "--batch-sizes", "1", "--repeat", "1", "--no-onnx"],
    ):
        fails(capsys, argv, str(path), needle)
    assert not (tmp_path / "model.onnx").exists()


def test_resume_from_a_corrupt_checkpoint(tmp_path, capsys, dataset, bad_checkpoints):
    path, needle = bad_checkpoints["truncated"]
    fails(capsys, ["train", "-c", write_config(tmp_path, dataset), "--resume", path], str(path), needle)


# --- videos --------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"not a video at all", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64])
def test_videos_that_cannot_be_opened(tmp_path, capsys, tiny_checkpoint, content):
    video = tmp_path / "clip.mp4"
    video.write_bytes(content)
    fails(
        capsys,
        ["predict", "--weights", tiny_checkpoint, "--source", video, "--out", tmp_path / "pred"],
        str(video),
        "cannot open video",
    )
    assert not (tmp_path / "pred").exists()


# --- outputs -------------------------------------------------------------------------------------


def _output_commands(tmp_path: Path, dataset: Path, checkpoint: Path, target: Path) -> dict[str, list]:
    config = write_config(tmp_path, dataset, train={"output_dir": str(target / "run")})
    return {
        "train": ["train", "-c", config],
        "predict": ["predict", "--weights", checkpoint, "--source", dataset / "images", "--out", target / "pred"],
        "export": ["export", "--weights", checkpoint, "--out", target / "model.onnx"],
        "eval": ["eval", "--weights", checkpoint, "-c", config, "--plots", target / "report"],
        "anchors": ["anchors", "fit", "-c", config, "--out", target / "anchors.yaml"],
        "stats": ["data", "stats", "-c", config, "--out", target / "stats"],
        "synth": ["data", "synth", target / "synth", "--images", "2"],
        "convert": ["data", "convert", "--from", "coco", "--to", "yolo", dataset, target / "yolo"],
    }


@pytest.mark.parametrize("command", ["train", "predict", "export", "eval", "anchors", "stats", "synth", "convert"])
def test_output_under_a_file(tmp_path, capsys, dataset, tiny_checkpoint, command):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("my notes")
    fails(capsys, _output_commands(tmp_path, dataset, tiny_checkpoint, blocker)[command], str(blocker))
    assert blocker.read_text() == "my notes"


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
    reason="root writes into read-only folders",
)
@pytest.mark.parametrize("command", ["train", "predict", "export", "eval", "anchors", "stats", "synth", "convert"])
def test_read_only_output_folder(tmp_path, capsys, dataset, tiny_checkpoint, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        fails(capsys, _output_commands(tmp_path, dataset, tiny_checkpoint, locked)[command], str(locked))
    finally:
        locked.chmod(0o700)


def test_nothing_is_overwritten(tmp_path, capsys, dataset, tiny_checkpoint):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"my model")
    fails(capsys, ["export", "--weights", tiny_checkpoint, "--out", onnx], str(onnx), "already exists")
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / "keep.txt").write_text("mine")
    fails(capsys, ["data", "convert", "--from", "coco", "--to", "yolo", dataset, converted], str(converted))
    assert onnx.read_bytes() == b"my model" and (converted / "keep.txt").read_text() == "mine"
