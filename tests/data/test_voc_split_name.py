"""A VOC split given by name in a config (data.val.annotations: test) still means ImageSets/Main/test.txt after
config loading has made the paths absolute (it did not: "VOC split file not found")."""

import os

from multibox.config import load_config
from multibox.data.datamodule import load_split


def test_split_name_from_a_config_resolves_inside_the_root(tmp_path) -> None:
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("x\n")
    (root / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>20</width><height>10</height></size><object><name>cat"
        "</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        "</object></annotation>"
    )
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        config = load_config(None, ["data.format=voc", "data.val.images=VOC2007", "data.val.annotations=test"])
    finally:
        os.chdir(cwd)
    split = load_split(config.data.val, "val", "voc", config.data)
    assert len(split) == 1 and split.records[0].iscrowd.tolist() == [True]  # VOC's difficult, read and kept
