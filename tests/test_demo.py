"""`make demo`, shortened: every stage (collect, train, eval, GRPO, eval, report) runs a few steps."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_demo_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--quick=true", f"--output_dir={out}"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"Report: {out / 'report.md'}" in result.stdout
    report = (out / "report.md").read_text()
    assert "| Stage I (lerobot-train" in report and "| Stage II (lerobot-aim-grpo" in report
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert list((out / "eval_stage2" / "videos").rglob("pred_episode_*.mp4"))
