"""lerobot-rollout drives an AIM checkpoint on a simulated robot (sync backend; RTC is refused)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _rollout(checkpoint: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lerobot.scripts.lerobot_rollout",
            f"--policy.path={checkpoint}",
            "--robot.type=aim_sim",
            "--duration=2",
            "--fps=10",
            "--task=go",
            "--play_sounds=false",
            "--return_to_initial_position=false",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_lerobot_rollout_sync_backend_and_rtc_refusal(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", ["head"], image_hw=(48, 64))
    result = _rollout(checkpoint)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Rollout finished" in result.stderr + result.stdout
    rtc = _rollout(checkpoint, "--inference.type=rtc")
    assert rtc.returncode != 0
    assert "RTC inference is not supported by policy type 'aim'" in rtc.stderr
