"""predict's outputs agree with eval's and never overwrite each other (issue 13, item 6)."""

import shutil

import cv2
import numpy as np
import torch

from multibox.inference.api import Detections
from multibox.inference.predict import predict
from multibox.metrics.coco import DetectionAccumulator


def test_predict_and_eval_round_scores_alike():
    boxes = np.array([[1.234, 2.345, 30.456, 40.567]], np.float32)
    scores = np.array([0.123456789], np.float32)
    found = Detections(boxes, scores, np.array([0]), ["a"], np.array([7]), (48, 64))
    accumulator = DetectionAccumulator()
    accumulator.add([1], [torch.from_numpy(boxes)], [torch.from_numpy(scores)], [torch.tensor([7])])
    evaluated = accumulator.results()[0]
    predicted = found.to_coco(1)[0]
    assert predicted["score"] == evaluated["score"]
    assert predicted["bbox"] == evaluated["bbox"]


def test_save_txt_keeps_one_label_file_per_image_when_stems_clash(shapes_dataset, tiny_checkpoint, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    first = sorted((shapes_dataset / "images").iterdir())[0]
    shutil.copyfile(first, source / "a.jpg")
    cv2.imwrite(str(source / "a.png"), cv2.imread(str(first)))
    shutil.copyfile(first, source / "b.jpg")
    predict(tiny_checkpoint, source, tmp_path / "out", conf=0.0, progress=False, save_txt=True, max_det=3)
    labels = sorted(p.name for p in (tmp_path / "out" / "labels").iterdir())
    assert labels == ["a.jpg.txt", "a.png.txt", "b.txt"]
    assert all((tmp_path / "out" / "labels" / name).read_text() for name in labels)
