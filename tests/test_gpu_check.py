"""``benchmarks.gpu_check --smoke=true`` runs every step of the first GPU run, on the CPU at tiny size."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_end_to_end_and_writes_its_results(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gpu_check",
        "--smoke=true",
        f"--results={tmp_path}",
        "--train_layers=[1,2]",
        "--repeats=1",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (path,) = tmp_path.glob("gpu_check_cpu*_smoke.json")
    result = json.loads(path.read_text())
    assert result["machine"]["cpu_count"] and result["smoke"]
    assert result["gpu_tests"]["returncode"] == 0 and "skipped" in result["gpu_tests"]["summary"]
    chunk, train = result["chunk"], result["train"]
    assert chunk["cached_s"] > 0 and chunk["uncached_flop"] > chunk["cached_flop"] > 0
    assert [s["layers"] for s in train["measured"]] == [1, 2, 4]  # the tiny preset's full depth is run
    assert train["full_depth_measured"] and train["flop"] > 0
    assert all(s["loss"] == s["loss"] for s in train["measured"])
    assert path.with_suffix(".md").read_text().count("| train step") == 4
