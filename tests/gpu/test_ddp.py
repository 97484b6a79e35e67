"""A 1-GPU DDP job (NCCL) launched by `multibox train` with train.strategy=ddp: the strategy, the process group's
backend and a finished run. (tests/engine/test_ddp.py runs 2 CPU processes on gloo.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Run as `python job.py train -c CFG ...`; writes what the trainer saw to ddp.json when training ends.
JOB = """
import json, sys
import lightning as L
import torch.distributed as dist
import multibox.engine.train as train_module
from multibox.cli import main

class Recorder(L.Callback):
    def on_train_end(self, trainer, module):
        record = {"strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,
                  "backend": dist.get_backend() if dist.is_initialized() else None,
                  "device": str(module.device), "steps": trainer.global_step}
        open(OUT, "w").write(json.dumps(record))

original_callbacks = train_module._callbacks
train_module._callbacks = lambda *args: [*original_callbacks(*args), Recorder()]
sys.exit(main(sys.argv[1:]))
"""


def test_one_gpu_ddp_step_uses_nccl(train_config, tmp_path, device):
    record = tmp_path / "ddp.json"
    (tmp_path / "job.py").write_text(f"OUT = {str(record)!r}\n" + JOB, encoding="utf-8")
    args = [
        "train",
        "-c",
        str(train_config),
        f"train.output_dir={tmp_path / 'run'}",
        "train.strategy=ddp",
        "train.devices=1",
        "train.epochs=1",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "job.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(record.read_text())
    assert seen["strategy"] == "DDPStrategy" and seen["world_size"] == 1 and seen["steps"] == 2
    assert seen["backend"] == ("nccl" if device.type == "cuda" else "gloo")
    assert seen["device"].startswith(device.type)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "run" / "metrics.json").is_file()
