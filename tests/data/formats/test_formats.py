"""Dataset formats: every writer's output reads back to the same boxes, labels and class names;
conversions round-trip; Cognata filters and label map; strict one-line errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from multibox.cli import main
from multibox.config import parse_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.formats import (
    WRITERS,
    convert,
    load_cognata,
    load_dataset,
    load_openimages,
    load_txt,
    load_voc,
    load_yolo,
    write_coco,
    write_voc,
)
from multibox.data.formats.coco import load_coco
from multibox.data.records import DetectionSet, ImageRecord
from multibox.data.synth import SHAPES, make_synthetic_dataset
from multibox.errors import MultiboxError

# format -> (read arguments relative to the written folder, absolute pixel tolerance, relative tolerance)
READ_BACK = {
    "coco": ({}, 0.0, 0.0),
    "voc": ({"annotations": "trainval"}, 1.0, 0.0),
    "yolo": ({}, 0.0, 1e-3),
    "txt": ({}, 1.0, 0.0),
    "openimages": ({"annotations": "train"}, 0.0, 1e-3),
}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DetectionSet]:
    root = make_synthetic_dataset(tmp_path_factory.mktemp("fmt") / "coco", 6, (64, 96), seed=5)
    data = load_coco(root / "images", root / "annotations.json")
    # One record gets fractional coordinates, so rounding tolerances are exercised.
    data.records[0].boxes[0] += np.float32(0.3)
    return root, data


@pytest.fixture(scope="module")
def written(source, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("written")
    for fmt, writer in WRITERS.items():
        writer(source[1], out / fmt)
    return {fmt: out / fmt for fmt in WRITERS}


def assert_same(a: DetectionSet, b: DetectionSet, atol: float = 0.0, rtol: float = 0.0) -> None:
    assert a.class_names == b.class_names and len(a) == len(b)
    for ra, rb in zip(a.records, b.records, strict=True):
        assert ra.file.name == rb.file.name and (ra.width, ra.height) == (rb.width, rb.height)
        np.testing.assert_allclose(ra.boxes, rb.boxes, atol=atol + 1e-4, rtol=rtol)
        np.testing.assert_array_equal(ra.labels, rb.labels)


@pytest.mark.parametrize("fmt", list(READ_BACK))
def test_every_writer_reads_back(fmt, source, written) -> None:
    options, atol, rtol = READ_BACK[fmt]
    back = load_dataset(fmt, written[fmt], **options)
    assert_same(source[1], back, atol, rtol)
    assert back.category_ids == source[1].category_ids  # the synthetic ids are already 1..K
    if fmt == "coco":
        assert [r.image_id for r in back.records] == [r.image_id for r in source[1].records]
    # writers link or copy images; the source images are untouched and still there
    assert all(r.file.is_file() for r in source[1].records)


@pytest.mark.parametrize("via", ["voc", "yolo", "txt"])
def test_convert_round_trips_through_coco(via, source, tmp_path) -> None:
    root, data = source
    assert main(["data", "convert", "--from", "coco", "--to", via, str(root), str(tmp_path / via)]) == 0
    extra = ["--annotations", "trainval"] if via == "voc" else []
    assert (
        main(["data", "convert", "--from", via, "--to", "coco", str(tmp_path / via), str(tmp_path / "back"), *extra])
        == 0
    )
    back = load_coco(tmp_path / "back" / "images", tmp_path / "back" / "annotations.json")
    original = load_coco(root / "images", root / "annotations.json")
    assert_same(original, back, atol=1.0 if via != "yolo" else 0.0, rtol=1e-3)


def test_convert_never_overwrites(source, tmp_path, capsys) -> None:
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("x")
    assert main(["data", "convert", "--from", "coco", "--to", "yolo", str(source[0]), str(tmp_path / "dst")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["keep.txt"]


def test_voc_difficult_is_crowd_and_one_based(tmp_path, source) -> None:
    record = source[1].records[1]
    crowd = ImageRecord(
        1, record.file, record.width, record.height, [[0, 0, 10, 12], [5, 6, 20, 30]], [1, 2], [False, True]
    )
    write_voc(DetectionSet([crowd], ["a", "b"], [1, 2]), tmp_path / "voc")
    xml = next((tmp_path / "voc" / "Annotations").glob("*.xml")).read_text()
    assert "<xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>12</ymax>" in xml and "<difficult>1</difficult>" in xml
    back = load_voc(tmp_path / "voc", "trainval")
    np.testing.assert_array_equal(back.records[0].iscrowd, [False, True])
    np.testing.assert_allclose(back.records[0].boxes, [[0, 0, 10, 12], [5, 6, 20, 30]])
    # without labels.txt: names sorted from the XMLs; or given explicitly
    (tmp_path / "voc" / "labels.txt").unlink()
    assert load_voc(tmp_path / "voc", None).class_names == ["a", "b"]
    assert load_voc(tmp_path / "voc", None, ["b", "a", "c"]).records[0].labels.tolist() == [2, 1]


def test_yolo_and_txt_drop_crowd_with_a_warning(tmp_path, source) -> None:
    record = source[1].records[1]
    crowd = ImageRecord(
        1, record.file, record.width, record.height, [[0, 0, 10, 12], [5, 6, 20, 30]], [1, 2], [False, True]
    )
    with pytest.warns(UserWarning, match="1 crowd boxes left out"):
        WRITERS["yolo"](DetectionSet([crowd], ["a", "b"], [1, 2]), tmp_path / "yolo")
    assert load_yolo(tmp_path / "yolo").records[0].num_boxes == 1


def test_yolo_class_names_from_list_txt_or_yaml(written, tmp_path) -> None:
    yolo = written["yolo"]
    names = tmp_path / "names.txt"
    names.write_text("\n".join(SHAPES) + "\n")
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text("names: [" + ", ".join(SHAPES) + "]\n")
    for spec in (list(SHAPES), names, yaml_file):
        assert load_yolo(yolo / "images", yolo / "labels", spec).class_names == list(SHAPES)


def test_datamodule_builds_a_yolo_loader(written) -> None:
    raw = {
        "data": {
            "format": "yolo",
            "train": {"images": str(written["yolo"])},
            "class_names": list(SHAPES),
            "input_size": [64, 96],
            "batch_size": 2,
            "num_workers": 0,
            "augment": "none",
        }
    }
    module = DetectionDataModule(parse_config(raw))
    assert module.class_names == list(SHAPES) and module.num_classes == 5
    batch = next(iter(module.train_dataloader()))
    assert batch["images"].shape == (2, 3, 64, 96)


def test_openimages_classes_restrict_and_group_of_is_crowd(tmp_path, source) -> None:
    root = tmp_path / "oi"
    (root / "train").mkdir(parents=True)
    image = source[1].records[0].file
    for name in ("img1", "img2"):
        (root / "train" / f"{name}.jpg").write_bytes(image.read_bytes())
    (root / "class-descriptions-bbox.csv").write_text("/m/01,Cat\n/m/02,Dog\n")
    (root / "sub-train-annotations-bbox.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        "img1,xclick,/m/01,1,0.1,0.5,0.25,0.5,0,0,0,0,0\n"
        "img1,xclick,/m/02,1,0,1,0,1,0,0,1,0,0\n"
        "img2,xclick,/m/02,1,0.5,0.75,0.5,1,0,0,0,0,0\n"
    )
    everything = load_openimages(root, "train")
    assert everything.class_names == ["Cat", "Dog"] and len(everything) == 2
    np.testing.assert_allclose(everything.records[0].boxes, [[9.6, 16, 48, 32], [0, 0, 96, 64]], rtol=1e-5)
    assert everything.records[0].iscrowd.tolist() == [False, True]
    dogs = load_openimages(root, "train", ["Dog"])
    assert dogs.class_names == ["Dog"] and [r.file.name for r in dogs.records] == ["img1.jpg", "img2.jpg"]
    assert dogs.records[0].labels.tolist() == [1]
    with pytest.raises(MultiboxError, match="'Bird' is not a class"):
        load_openimages(root, "train", ["Bird"])
    (root / "sub-validation-annotations-bbox.csv").write_text(
        "ImageID,LabelName,XMin,XMax,YMin,YMax\nimg1,/m/01,0.1,x,0,1\n"
    )
    with pytest.raises(MultiboxError, match=r"sub-validation-annotations-bbox.csv:2: .*must be numbers"):
        load_openimages(root, "validation")


COGNATA_HEADER = "object_id,bounding_box_2D,object_class,object_class_name,center_distance\n"


def test_cognata_filters_and_label_map(tmp_path) -> None:
    from PIL import Image

    recording = tmp_path / "cognata" / "10001_Urban_Clear_Noon"
    png, ann = recording / "Cognata_Camera_01_8M_png", recording / "Cognata_Camera_01_8M_ann"
    png.mkdir(parents=True)
    ann.mkdir()
    for i in range(2):
        Image.new("RGB", (200, 100)).save(png / f"frame_{i:04d}.png")
    (ann / "frame_0000.csv").write_text(
        COGNATA_HEADER
        + '1,"[10, 10, 50, 40]",8,Car,20.5\n'  # kept: Car -> label 4
        + '2,"[0, 0, 6, 6]",14,Pedestrian,10\n'  # area 36 < 50: dropped
        + '3,"[0, 0, 100, 5]",14,Pedestrian,10\n'  # height 5 < 8: dropped
        + '4,"[20, 20, 60, 60]",2,Pole,10\n'  # ignored class: dropped
        + '5,"[20, 20, 60, 60]",10,Bus,350\n'  # farther than 300: dropped
        + '6,"[100, 20, 140, 60]",28,Traffic_light,5\n'  # kept: label 1
    )
    (ann / "frame_0001.csv").write_text(COGNATA_HEADER + '1,"[1, 2, 30, 40]",44,Animal,1\n')
    data = load_cognata(tmp_path / "cognata")
    assert data.num_classes == 14 and data.class_names[:4] == ["Traffic_light", "Props", "TrafficSign", "Car"]
    assert data.class_names[-1] == "Animal" and data.category_ids == list(range(1, 15))
    first, second = data.records
    assert (first.width, first.height) == (200, 100)
    np.testing.assert_allclose(first.boxes, [[10, 10, 50, 40], [100, 20, 140, 60]])
    assert first.labels.tolist() == [4, 1] and second.labels.tolist() == [14]
    assert load_cognata(tmp_path / "cognata", max_distance=400).records[0].labels.tolist() == [4, 12, 1]
    with pytest.warns(UserWarning, match="dropped 1 boxes of classes outside the 14-class label map"):
        assert (
            load_cognata(tmp_path / "cognata", ignored_classes=[]).records[0].num_boxes == 2
        )  # Pole is not in the map
    raw = {
        "data": {
            "format": "cognata",
            "train": {"images": str(tmp_path / "cognata")},
            "cognata": {"min_area": 10, "min_side": 5},
        }
    }
    config = parse_config(raw)
    from multibox.data.datamodule import load_split

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_split(config.data.train, "train", "cognata", config.data).records[0].labels.tolist() == [4, 9, 9, 1]
    (ann / "frame_0001.csv").write_text(COGNATA_HEADER + '1,"[1, 2, 30]",44,Animal,1\n')
    with pytest.raises(MultiboxError, match=r"frame_0001.csv:2: bounding_box_2D must hold 4 numbers"):
        load_cognata(tmp_path / "cognata")
    (png / "frame_0002.png").write_bytes((png / "frame_0000.png").read_bytes())
    with pytest.raises(MultiboxError, match="2 CSV files for 3 images"):
        load_cognata(tmp_path / "cognata")


def test_paths_escaping_the_root_are_refused(written, tmp_path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("../../../../../../etc/passwd 1,1,5,5,0\n")
    with pytest.raises(
        MultiboxError, match=r"list.txt:1: image path '.*etc/passwd' is outside the dataset root"
    ) as error:
        load_txt(written["txt"] / "images", listing, list(SHAPES))
    assert "\n" not in str(error.value)
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text("<annotation><filename>../../../etc/passwd</filename></annotation>")
    with pytest.raises(MultiboxError, match=r"a.xml: image path .* is outside the dataset root"):
        load_voc(voc, None, ["x"])


@pytest.mark.parametrize(
    "fmt, content, message",
    [
        ("txt", "000000.jpg 1,2,3,4,0\n000001.jpg 1,2,3,0\n", r"annotations.txt:2: expected boxes as x1,y1,x2,y2,cls"),
        ("txt", "000000.jpg 1,2,3,4,9\n", r"annotations.txt:1: class 9 is outside 0..4"),
        ("yolo", "0 0.5 0.5 0.1 0.1\n1 0.5 0.5\n", r"000000.txt:2: expected 'class cx cy w h'"),
        ("yolo", "0 0.5 0.5 0.1 1.7\n", r"000000.txt:1: box .* is not normalised"),
        (
            "voc",
            "<annotation><object><name>circle</name></annotation>",
            r"000000.xml: invalid XML: mismatched tag: line 1",
        ),
        (
            "voc",
            "<annotation><object><name>circle</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
            r"000000.xml: object 1: <xmin> must be a number",
        ),
    ],
)
def test_malformed_files_are_one_line_errors(fmt, content, message, written, tmp_path) -> None:
    import shutil

    copy = tmp_path / fmt
    shutil.copytree(written[fmt], copy)
    target = {
        "txt": copy / "annotations.txt",
        "yolo": copy / "labels" / "000000.txt",
        "voc": copy / "Annotations" / "000000.xml",
    }[fmt]
    target.write_text(content)
    with pytest.raises(MultiboxError, match=message) as error:
        load_dataset(fmt, copy, **READ_BACK[fmt][0])
    assert "\n" not in str(error.value) and str(target) in str(error.value)


def test_write_coco_keeps_ids_and_crowd(tmp_path, source) -> None:
    record = source[1].records[0]
    data = DetectionSet(
        [ImageRecord(42, record.file, record.width, record.height, [[1, 2, 3.5, 4]], [2], [True])], ["a", "b"], [7, 9]
    )
    write_coco(data, tmp_path / "c")
    raw = json.loads((tmp_path / "c" / "annotations.json").read_text())
    assert (
        raw["images"][0]["id"] == 42
        and raw["annotations"][0]["category_id"] == 9
        and raw["annotations"][0]["iscrowd"] == 1
    )
    back = load_coco(tmp_path / "c" / "images", tmp_path / "c" / "annotations.json")
    assert back.category_ids == [7, 9] and back.records[0].iscrowd.tolist() == [True]
    with pytest.raises(MultiboxError, match="not empty"):
        write_coco(data, tmp_path / "c")
    with pytest.raises(MultiboxError, match="no writer for format 'cognata'"):
        convert("coco", "cognata", tmp_path / "c", tmp_path / "d")


def test_convert_counts_the_boxes_it_wrote(tmp_path, source, capsys) -> None:
    """Issue 14 item 10: VOC difficult boxes left out of YOLO were still counted in `wrote ... boxes`."""
    record = source[1].records[1]
    crowd = ImageRecord(
        1, record.file, record.width, record.height, [[0, 0, 10, 12], [5, 6, 20, 30]], [1, 2], [False, True]
    )
    write_voc(DetectionSet([crowd], ["a", "b"], [1, 2]), tmp_path / "voc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(["data", "convert", "--from", "voc", "--to", "yolo", str(tmp_path / "voc"), str(tmp_path / "y")]) == 0
        )
    lines = sum(len(f.read_text().splitlines()) for f in (tmp_path / "y" / "labels").glob("*.txt"))
    assert lines == 1 and "1 boxes" in capsys.readouterr().out


def test_yolo_data_yaml_splits_and_names(tmp_path, written) -> None:
    """Issue 14 item 2: an Ultralytics root's data.yaml gives each split its folder; split folders never merge."""
    root = tmp_path / "u"
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
    images = sorted((written["yolo"] / "images").iterdir())
    for index, image in enumerate(images):
        split = "train" if index < len(images) - 1 else "val"
        (root / "images" / split / image.name).write_bytes(image.read_bytes())
        label = written["yolo"] / "labels" / f"{image.stem}.txt"
        (root / "labels" / split / label.name).write_text(label.read_text())
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: [images/val]\nnames: [" + ", ".join(SHAPES) + "]\n"
    )
    assert len(load_yolo(root, split="train")) == len(images) - 1
    assert len(load_yolo(root / "data.yaml", split="val")) == 1
    assert load_yolo(root / "images" / "val").class_names == list(SHAPES)  # names from data.yaml two folders up
    with pytest.raises(MultiboxError, match="names different train: and val:"):
        load_yolo(root)
    (root / "data.yaml").unlink()
    with pytest.raises(MultiboxError, match=r"holds split folders \(train, val\)"):
        load_yolo(root, class_names=list(SHAPES))
