"""`multibox predict`: an image, a folder or a video in; annotated copies and ``predictions.json`` out.

Every source goes through one ``Detector`` (the same preprocessing as evaluation). Outputs:
annotated images at their relative paths (or an annotated video of the same name), COCO
results in ``predictions.json`` and, with ``save_txt``, one YOLO-style text file per image
under ``labels/``. Nothing is overwritten: not the source images, not an earlier run.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from multibox.devices import leave_a_core_free
from multibox.errors import MultiboxError
from multibox.inference.api import Detections, Detector, read_rgb
from multibox.inference.video import VIDEO_FOURCC, VideoReader, VideoWriter, is_video
from multibox.outputs import writable_dir
from multibox.reporting.draw import draw_detections, save_image

__all__ = ["IMAGE_SUFFIXES", "list_images", "predict", "predict_images", "predict_video", "read_rgb"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _annotated(image: np.ndarray, found: Detections) -> np.ndarray:
    """A copy of ``image`` (RGB) with one image's detections drawn, coloured by class index."""
    return draw_detections(image, found.boxes, found.names, found.scores, color_key=found.labels)


def list_images(source: Path, exclude: Path | None = None) -> list[Path]:
    """An image file, or every image under a folder (recursively, sorted), leaving out `exclude`'s contents."""
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES | set(VIDEO_FOURCC)))
            raise MultiboxError(f"{source}: not an image or video file name (expected {kinds})")
        return [source]
    if source.is_dir():
        skip = exclude.resolve() if exclude is not None else None
        files = sorted(
            p
            for p in source.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not (skip and p.resolve().is_relative_to(skip))
        )
        if not files:
            raise MultiboxError(f"{source}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    raise MultiboxError(f"{source}: no such file or folder")


def _check_output_dir(out_dir: Path, source_root: Path) -> None:
    """Never overwrite the user's images or videos, or an earlier prediction run."""
    if out_dir.resolve() == source_root.resolve():
        raise MultiboxError(
            f"{out_dir}: --out is the source folder itself; annotated copies would overwrite the originals"
        )
    if (out_dir / "predictions.json").exists():
        raise MultiboxError(f"{out_dir}: already holds predictions.json from an earlier run; choose another --out")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=not enabled,
    )


def _save_txt(path: Path, detections: Detections) -> None:
    """YOLO-style ``class cx cy w h score`` lines; an empty file for an image without detections."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(detections.to_yolo(), encoding="utf-8")


def predict(
    weights: Path,
    source: Path,
    out_dir: Path,
    conf: float = 0.3,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    *,
    iou: float | None = None,
    max_det: int | None = None,
    classes: Iterable[str | int] | None = None,
    half: bool = False,
    save_txt: bool = False,
    **slicing: Any,
) -> list[dict[str, Any]]:
    """Detect objects in an image, a folder of images or a video; return the COCO results written.

    `slicing`: tile, overlap, full_frame, merge for sliced inference (see ``Detector``)."""
    source, out_dir = Path(source), Path(out_dir)
    video = is_video(source)
    root = source if source.is_dir() else source.parent
    _check_output_dir(out_dir, root)
    files = None if video else list_images(source, exclude=out_dir)
    if video:
        VideoReader(source).close()  # an undecodable video fails before the checkpoint is loaded
    writable_dir(out_dir, "predictions")  # and so does an output folder that cannot be written
    detector = Detector.from_checkpoint(
        weights,
        device=device,
        conf=conf,
        iou=iou,
        max_det=max_det,
        classes=classes,
        half=half,
        batch_size=batch_size,
        **slicing,
    )
    leave_a_core_free(detector.device)  # decoding and drawing run beside the network
    out_dir.mkdir(parents=True, exist_ok=True)
    if video:
        results = predict_video(detector, source, out_dir, progress, save_txt)
    else:
        assert files is not None  # listed above for a source that is not a video
        results = predict_images(detector, files, root, out_dir, progress, save_txt)
    (out_dir / "predictions.json").write_text(json.dumps(results), encoding="utf-8")
    return results


def _read_batch(paths: list[Path]) -> list[tuple[Path, np.ndarray]]:
    """Decoded images of a batch; unreadable ones are warned about and left out."""
    images = []
    for path in paths:
        image = read_rgb(path)
        if image is None:
            warnings.warn(f"{path}: cannot read image (truncated, or not an image), skipped", stacklevel=2)
        else:
            images.append((path, image))
    return images


def _label_files(files: list[Path], root: Path) -> dict[Path, str]:
    """labels/<image stem>.txt as YOLO names them; <image name>.txt (a.jpg.txt, a.png.txt) for images whose
    stems clash in one folder, so that no label file overwrites another."""
    stems = Counter(path.relative_to(root).with_suffix("").as_posix() for path in files)
    return {
        path: (
            relative.with_suffix("").as_posix()
            if stems[relative.with_suffix("").as_posix()] == 1
            else relative.as_posix()
        )
        + ".txt"
        for path in files
        for relative in [path.relative_to(root)]
    }


def predict_images(
    detector: Detector, files: list[Path], root: Path, out_dir: Path, progress: bool = True, save_txt: bool = False
) -> list[dict[str, Any]]:
    """Batches of images through `detector`; image ids are positions in `files` + 1, names relative to `root`.

    The next batch is decoded on a thread while this one runs (OpenCV releases the GIL).
    """
    image_ids = {path: index + 1 for index, path in enumerate(files)}
    label_files = _label_files(files, root)
    batches = [files[i : i + detector.batch_size] for i in range(0, len(files), detector.batch_size)]
    results: list[dict[str, Any]] = []
    with _progress(progress) as bar, ThreadPoolExecutor(max_workers=1) as reader:
        task = bar.add_task("predicting", total=len(files))
        upcoming = reader.submit(_read_batch, batches[0]) if batches else None
        for index in range(len(batches)):
            assert upcoming is not None  # submitted for every batch up to the last
            images = upcoming.result()
            upcoming = reader.submit(_read_batch, batches[index + 1]) if index + 1 < len(batches) else None
            for (path, image), found in zip(images, detector.detect_rgb([image for _, image in images]), strict=True):
                name = path.relative_to(root).as_posix()
                results += found.to_coco(image_ids[path], name)
                (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
                save_image(out_dir / name, _annotated(image, found))
                if save_txt:
                    _save_txt(out_dir / "labels" / label_files[path], found)
            bar.advance(task, len(batches[index]))
    return results


def predict_video(
    detector: Detector, source: Path, out_dir: Path, progress: bool = True, save_txt: bool = False
) -> list[dict[str, Any]]:
    """Every frame of `source` through `detector`; writes ``out_dir/<source name>`` annotated at the same fps.

    Frame i (from 0) is image id i + 1 named ``<video name>#<i, 6 digits>`` in the results.
    """
    reader = VideoReader(source)
    writer = VideoWriter(out_dir / source.name, reader.fps)
    results: list[dict[str, Any]] = []
    frame = 0
    try:
        with _progress(progress) as bar:
            task = bar.add_task(f"predicting {source.name}", total=reader.frame_count)
            for frames in reader.batches(detector.batch_size):
                for image, found in zip(frames, detector.detect_rgb(frames), strict=True):
                    results += found.to_coco(frame + 1, f"{source.name}#{frame:06d}")
                    writer.write(_annotated(image, found))
                    if save_txt:
                        _save_txt(out_dir / "labels" / f"{source.stem}_{frame:06d}.txt", found)
                    frame += 1
                bar.advance(task, len(frames))
    finally:
        reader.close()
        writer.close()
    if frame == 0:
        raise MultiboxError(f"{source}: no frames could be decoded")
    return results
