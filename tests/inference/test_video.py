"""multibox predict on a video: an annotated video of the same size, fps and length, and one image id per frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from multibox.cli import main
from multibox.errors import MultiboxError
from multibox.inference.predict import predict

# A second OpenMP thread spins against the loaded CPU and slows tiny forward passes 10x (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")
CONF = 0.3
FRAMES, FPS = 7, 12.0


def _write_video(path: Path, images: Path) -> None:
    """Seven 64x48 frames: the synthetic shapes images, cropped, one after another."""
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG")), FPS, (64, 48)
    )
    assert writer.isOpened()
    files = sorted(images.glob("*.jpg"))
    for index in range(FRAMES):
        writer.write(cv2.imread(str(files[index % len(files)]))[8:56])
    writer.release()


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_in_annotated_video_and_per_frame_results_out(
    shapes_dataset, tiny_checkpoint, make_detector, tmp_path, suffix
):
    source = tmp_path / "videos" / f"clip{suffix}"
    source.parent.mkdir()
    _write_video(source, shapes_dataset / "images")
    out = tmp_path / "pred"
    results = predict(
        tiny_checkpoint, source, out, conf=CONF, batch_size=3, device="cpu", progress=False, save_txt=True
    )

    assert json.loads((out / "predictions.json").read_text()) == results
    capture = cv2.VideoCapture(str(out / source.name))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    capture.release()
    annotated = _frames(out / source.name)
    assert len(annotated) == FRAMES and annotated[0].shape == (48, 64, 3)

    # Each frame's results are the API's detections on that decoded frame, under id frame + 1.
    frames = _frames(source)
    expected = []
    for index, found in enumerate(make_detector(conf=CONF)(frames)):
        expected += found.to_coco(index + 1, f"clip{suffix}#{index:06d}")
    assert results and len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert (got["image_id"], got["file_name"], got["category_id"]) == (
            want["image_id"],
            want["file_name"],
            want["category_id"],
        )
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=0.02)
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"clip_{i:06d}.txt" for i in range(FRAMES)]
    assert np.abs(annotated[0].astype(int) - frames[0]).max() > 100  # boxes were drawn


def test_video_errors(shapes_dataset, tiny_checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    with pytest.raises(MultiboxError, match="broken.mp4: cannot open video"):
        predict(tiny_checkpoint, broken, tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything is written

    source = tmp_path / "clip.avi"  # --out beside the video would overwrite it
    _write_video(source, shapes_dataset / "images")
    before = source.read_bytes()
    assert (
        main(
            [
                "predict",
                "--weights",
                str(tiny_checkpoint),
                "--source",
                str(source),
                "--out",
                str(tmp_path),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "overwrite the originals" in capsys.readouterr().err and source.read_bytes() == before
