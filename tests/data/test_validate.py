"""`multibox data validate`: every listed problem is found (not just the first), and --fix cleans a copy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from multibox.cli import main
from multibox.data.formats.coco import load_coco
from multibox.data.synth import make_synthetic_dataset
from multibox.data.validate import (
    BOX_OUTSIDE,
    CORRUPT_IMAGE,
    DUPLICATE_ANNOTATION_ID,
    DUPLICATE_IMAGE_ID,
    EMPTY_BOX,
    MISSING_IMAGE,
    SIZE_MISMATCH,
    UNKNOWN_CATEGORY,
    UNKNOWN_IMAGE_ID,
    UNSAFE_FILE_NAME,
    check_image_file,
    fix_coco,
    validate_coco,
)
from multibox.errors import MultiboxError


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """6 synthetic 64x64 images, then one of each problem."""
    root = make_synthetic_dataset(tmp_path / "d", 6, (64, 64), seed=5)
    images = root / "images"
    jpeg = (images / "000001.jpg").read_bytes()
    (images / "000001.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (images / "000002.jpg").unlink()  # missing
    (tmp_path / "outside.jpg").write_bytes((images / "000003.jpg").read_bytes())
    coco = json.loads((root / "annotations.json").read_text())
    anns = coco["annotations"]
    first_id = anns[0]["id"]
    next_id = max(a["id"] for a in anns) + 1
    anns += [
        {
            "id": next_id,
            "image_id": 5,
            "category_id": 1,
            "bbox": [50, 50, 30, 10],
            "area": 300,
            "iscrowd": 0,
        },  # partly outside
        {
            "id": next_id + 1,
            "image_id": 5,
            "category_id": 1,
            "bbox": [70, 70, 5, 5],
            "area": 25,
            "iscrowd": 0,
        },  # entirely outside
        {
            "id": next_id + 2,
            "image_id": 5,
            "category_id": 2,
            "bbox": [10, 10, 0, 5],
            "area": 0,
            "iscrowd": 0,
        },  # zero size
        {
            "id": next_id + 3,
            "image_id": 5,
            "category_id": 99,
            "bbox": [1, 1, 5, 5],
            "area": 25,
            "iscrowd": 0,
        },  # unknown category
        {
            "id": first_id,
            "image_id": 6,
            "category_id": 1,
            "bbox": [2, 2, 6, 6],
            "area": 36,
            "iscrowd": 0,
        },  # duplicate ann id
        {
            "id": next_id + 4,
            "image_id": 77,
            "category_id": 1,
            "bbox": [2, 2, 6, 6],
            "area": 36,
            "iscrowd": 0,
        },  # unknown image
    ]
    coco["images"].append({"id": 6, "file_name": "000005.jpg", "width": 64, "height": 64})  # duplicate image id
    coco["images"].append({"id": 50, "file_name": "../outside.jpg", "width": 64, "height": 64})  # escapes the folder
    coco["images"][3]["width"] = 80  # image 4 (000003.jpg): size mismatch
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_every_problem_is_reported_with_its_file_or_id(broken: Path) -> None:
    report = validate_coco(broken / "images", broken / "annotations.json", workers=4)
    assert not report.ok
    found = {(p.kind, p.where): p.detail for p in report.problems}
    assert "truncated JPEG" in found[(CORRUPT_IMAGE, "000001.jpg")]
    assert "not found" in found[(MISSING_IMAGE, "000002.jpg")]
    assert "64x64 but its annotation says 80x64" in found[(SIZE_MISMATCH, "000003.jpg")]
    assert "image id 6" in found[(DUPLICATE_IMAGE_ID, "000005.jpg")]
    assert (UNSAFE_FILE_NAME, "../outside.jpg") in found
    kinds = report.counts()
    assert kinds[BOX_OUTSIDE] == 2 and kinds[EMPTY_BOX] == 1 and kinds[UNKNOWN_CATEGORY] == 1
    assert kinds[DUPLICATE_ANNOTATION_ID] == 1 and kinds[UNKNOWN_IMAGE_ID] == 1
    outside = [p.detail for p in report.problems if p.kind == BOX_OUTSIDE]
    assert any("entirely" in d for d in outside) and any("entirely" not in d and "64x64" in d for d in outside)
    assert any("category id 99" in p.detail for p in report.problems if p.kind == UNKNOWN_CATEGORY)
    assert any("image id 77" in p.detail for p in report.problems if p.kind == UNKNOWN_IMAGE_ID)
    assert report.images_decoded == 4  # the 7 safely named entries less the truncated, missing and mis-sized ones


def test_check_image_file_decodes_fully(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", 1, (32, 32), seed=0)
    image = root / "images/000000.jpg"
    assert check_image_file(image, 32, 32) is None
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 50)
    assert check_image_file(bad)[0] == CORRUPT_IMAGE
    (tmp_path / "text.jpg").write_text("hello")
    assert check_image_file(tmp_path / "text.jpg")[0] == CORRUPT_IMAGE


def test_cli_exit_status_table_and_fix(broken: Path, tmp_path: Path, capsys) -> None:
    before = _digest(broken)
    args = ["data", "validate", "--images", str(broken / "images"), "--annotations", str(broken / "annotations.json")]
    assert main(args) == 1
    out = capsys.readouterr().out
    for kind in (
        CORRUPT_IMAGE,
        MISSING_IMAGE,
        BOX_OUTSIDE,
        EMPTY_BOX,
        UNKNOWN_CATEGORY,
        DUPLICATE_IMAGE_ID,
        UNSAFE_FILE_NAME,
    ):
        assert kind in out
    assert "errors" in out

    fixed = tmp_path / "fixed"
    assert main([*args, "--fix", str(fixed)]) == 0
    assert "validates clean" in " ".join(capsys.readouterr().out.split())
    assert _digest(broken) == before, "the original must be untouched"
    clean = validate_coco(fixed / "images", fixed / "annotations.json")
    assert clean.ok and not clean.problems
    data = load_coco(fixed / "images", fixed / "annotations.json")  # the strict loader accepts it
    files = sorted(r.file.name for r in data.records)
    assert files == ["000000.jpg", "000004.jpg", "000005.jpg"]
    coco = json.loads((fixed / "annotations.json").read_text())
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids))
    clipped = [a for a in coco["annotations"] if a["image_id"] == 5 and a["bbox"][:2] == [50, 50]]
    assert clipped and clipped[0]["bbox"] == [50, 50, 14, 10]
    assert (
        main(["data", "validate", "--images", str(fixed / "images"), "--annotations", str(fixed / "annotations.json")])
        == 0
    )


def test_fix_refuses_a_non_empty_output(broken: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/x").write_text("x")
    with pytest.raises(MultiboxError, match="must not exist or be empty"):
        fix_coco(broken / "images", broken / "annotations.json", tmp_path / "busy")
    assert (
        main(
            [
                "data",
                "validate",
                "--images",
                str(broken / "images"),
                "--annotations",
                str(broken / "annotations.json"),
                "--fix",
                str(tmp_path / "busy"),
            ]
        )
        == 2
    )
    assert "must not exist or be empty" in capsys.readouterr().err


def test_validate_a_config_with_overrides(tmp_path: Path, capsys) -> None:
    root = make_synthetic_dataset(tmp_path / "d", 3, (32, 32), seed=1)
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  train: {{images: {root}/images, annotations: {root}/annotations.json}}\n")
    assert main(["data", "validate", "-c", str(config), "data.batch_size=2"]) == 0
    assert "no problems" in capsys.readouterr().out
    assert main(["data", "validate"]) == 2
    assert "give a config" in capsys.readouterr().err


def test_other_formats_are_checked_after_their_reader(tmp_path):
    """A YOLO dataset with a truncated image: found, named by its real path, and --fix writes clean COCO."""
    from multibox.cli import main
    from multibox.data.formats import write_dataset
    from multibox.data.formats.coco import load_coco
    from multibox.data.synth import make_synthetic_dataset

    source = make_synthetic_dataset(tmp_path / "coco", 4, (64, 64), seed=3)
    write_dataset("yolo", load_coco(source / "images", source / "annotations.json"), tmp_path / "yolo")
    broken = sorted((tmp_path / "yolo").rglob("*.jpg"))[1]
    data = broken.read_bytes()
    broken.unlink()  # a hard link to the COCO copy: replace it, never touch the source
    broken.write_bytes(data[: len(data) // 3])
    assert main(["data", "validate", "--format", "yolo", "--images", str(tmp_path / "yolo")]) == 1
    assert (
        main(
            [
                "data",
                "validate",
                "--format",
                "yolo",
                "--images",
                str(tmp_path / "yolo"),
                "--fix",
                str(tmp_path / "clean"),
            ]
        )
        == 0
    )
    cleaned = load_coco(tmp_path / "clean" / "images", tmp_path / "clean" / "annotations.json")
    assert len(cleaned.records) == 3


def test_missing_images_are_not_counted_as_decoded(tmp_path: Path, capsys) -> None:
    """Issue 14 item 9: `30 images (30 decoded)` was printed when all 30 were missing."""
    root = make_synthetic_dataset(tmp_path / "d", 3, (32, 32), seed=1)
    for image in (root / "images").iterdir():
        image.unlink()
    assert (
        main(["data", "validate", "--images", str(root / "images"), "--annotations", str(root / "annotations.json")])
        == 1
    )
    assert "3 images (0 decoded)" in capsys.readouterr().out
