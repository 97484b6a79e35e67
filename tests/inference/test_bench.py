"""`multibox bench`: every stage timed in both runtimes, a timer that measures what it says."""

import json
import time

import pytest

from multibox.cli import main
from multibox.inference.bench import STAGES, Timing, bench_table, median_ms


def test_median_ms_times_a_known_call():
    calls = []
    elapsed = median_ms(
        lambda: (calls.append(1), time.sleep(0.02)), warmup=1, repeat=3, device=__import__("torch").device("cpu")
    )
    assert len(calls) == 4 and 20.0 <= elapsed < 200.0


def test_timing_and_table_rows():
    timing = Timing("cpu", "pytorch", "model", 8, 40.0)
    assert timing.images_per_s == pytest.approx(200.0)
    table = bench_table([timing, Timing("cpu", "onnxruntime", "model", 8, 20.0)], "t")
    assert table.row_count == 1 and [c.header for c in table.columns][3:5] == ["torch ms/batch", "torch img/s"]


def test_cli_bench_times_every_stage_in_both_runtimes(tmp_path, one_thread, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {name: ssdlite320_mobilenet_v3_large, width_mult: 0.25, num_classes: 3}\ndata: {input_size: [64, 64]}\n"
    )
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "-c",
        str(config),
        "--batch-sizes",
        "1,2",
        "--device",
        "cpu",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "--json",
        str(out),
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "end-to-end" in printed and "ORT img/s" in printed
    record = json.loads(out.read_text())
    assert record["input_size"] == [64, 64] and record["machine"]["torch"]
    found = {(t["runtime"], t["stage"], t["batch_size"]) for t in record["timings"]}
    assert found == {(r, s, n) for r in ("pytorch", "onnxruntime") for s in STAGES for n in (1, 2)}
    assert all(t["ms_per_batch"] > 0 for t in record["timings"])


def test_cli_bench_needs_exactly_one_model_source(tmp_path, capsys):
    assert main(["bench"]) == 2
    assert "exactly one of --weights CKPT or -c CONFIG" in capsys.readouterr().err
    assert main(["bench", "-c", str(tmp_path / "missing.yaml"), "--batch-sizes", "1,x"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads: must be at least 1, got 0" in capsys.readouterr().err
