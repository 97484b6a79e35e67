"""Peak memory and time of one ssd_resnet50 training step: 640x640 tiles of an 8 MP frame vs whole frames.

Each case runs in its own process (its peak RSS is the kernel's VmHWM of that process): build
`ssd_resnet50` (the MLCommons Cognata layout, 10 scores per box) at the case's input size, and run
one SGD step (forward, multibox loss, backward, update) on a batch. The tiled case reads a real
2160x3840 JPEG and crops it with the training pipeline's TileCrop (data.tiles), so the frame's
decode is in its peak; whole-frame cases feed random frames of the given size.

    python benchmarks/bench_tile_memory.py            # all cases, one JSON line each
    python benchmarks/bench_tile_memory.py one tile 640 640 1
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [("tile", 640, 640, 1), ("tile", 640, 640, 2), ("frame", 270, 480, 1), ("frame", 540, 960, 1)]


def one(kind: str, height: int, width: int, batch: int) -> dict:
    import cv2
    import numpy as np
    import torch

    from multibox.config import TilesConfig, load_config
    from multibox.data.tiles import TileCrop
    from multibox.data.transforms import build_train_transform
    from multibox.engine.module import DetectionModule

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = load_config(
        None,
        ["model.name=ssd_resnet50", f"data.input_size=[{height},{width}]", "anchors.sizes=[21,45,99,153,207,261,315]"],
    )
    module = DetectionModule(config.to_dict(), [f"c{i}" for i in range(9)], list(range(1, 10)))
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-4, momentum=0.9)
    boxes = np.array([[1000, 1000, 1030, 1020], [1200, 1100, 1400, 1300]], np.float32)
    if kind == "tile":  # crop tiles out of a real 8 MP frame, as data.tiles does
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 255, (2160, 3840, 3), dtype=np.uint8)
        path = Path(tempfile.mkdtemp()) / "frame.jpg"
        cv2.imwrite(str(path), frame)
        crop = TileCrop(TilesConfig(size=(height, width)), build_train_transform("none", (height, width), seed=0))
        tiles = [crop(cv2.imread(str(path))[..., ::-1].copy(), boxes, np.array([1, 2])) for _ in range(batch)]
        images = torch.stack([torch.from_numpy(t[0].copy()).permute(2, 0, 1) for t in tiles]).float() / 255
        del frame
    else:
        images = torch.rand(batch, 3, height, width)
    gt = torch.tensor([[[0.3, 0.3, 0.32, 0.33], [0.4, 0.4, 0.5, 0.5]]]).repeat(batch, 1, 1)
    labels = torch.tensor([[1, 2]]).repeat(batch, 1)
    start = time.perf_counter()
    losses = module.criterion(*module(images), module.detector.default_boxes, gt, labels)
    losses["loss"].backward()
    optimizer.step()
    step_s = time.perf_counter() - start
    return {
        "case": kind,
        "input": f"{height}x{width}",
        "batch": batch,
        "step_s": round(step_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "default_boxes": int(module.detector.default_boxes.shape[0]),
        "load": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "one":
        kind, height, width, batch = sys.argv[2], *map(int, sys.argv[3:6])
        print(json.dumps(one(kind, height, width, batch)))
        return
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "one", *map(str, case)], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
