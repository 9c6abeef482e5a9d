"""lerobot-aim-viz: the imagined future along a recorded episode, as an MP4 and a PNG."""

import subprocess
import sys
from pathlib import Path

import av
import pytest
from PIL import Image

from lerobot_aim.data.synthetic import make_synthetic_dataset
from tests.conftest import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_viz_cli_writes_video_and_contact_sheet(tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, num_episodes=1, episode_length=12, image_size=(32, 32))
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", ["head"], image_hw=(32, 32), action_dim=2)
    out = tmp_path / "viz"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lerobot_aim.viz.predictions",
            f"--policy.path={checkpoint}",
            "--dataset.repo_id=local/aim_synthetic",
            f"--dataset.root={data}",
            "--episode=0",
            f"--output_dir={out}",
            "--sheet_every=4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with av.open(str(out / "episode_0.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 12
    assert (frames[0].height, frames[0].width) == (32, 3 * 32)  # real | imagined RGB | imagined value map
    sheet = Image.open(out / "episode_0.png")
    tile, pad, tiles = 2 * 32, 2, 3  # scale 2, steps 0, 4, 8
    width = tiles * tile + (tiles + 1) * pad
    assert sheet.size[0] == width and sheet.size[1] >= 3 * tile


def _viz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lerobot_aim.viz.predictions", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_viz_cli_answers_wrong_inputs_in_one_line(tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, num_episodes=1, episode_length=8, image_size=(32, 32))  # camera "head"
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", ["front"], image_hw=(32, 32), action_dim=2)
    dataset = ["--dataset.repo_id=local/aim_synthetic", f"--dataset.root={data}"]
    result = _viz(f"--policy.path={checkpoint}", *dataset)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no observation.images.front" in result.stderr and "['front']" in result.stderr
    missing = _viz(f"--policy.path={tmp_path / 'outputs' / 'nothing'}", *dataset)
    assert missing.returncode == 2 and "No checkpoint at" in missing.stderr
    (checkpoint / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])
    truncated = _viz(f"--policy.path={checkpoint}", *dataset)
    assert (
        "model.safetensors cannot be read" in truncated.stderr and "damaged or truncated" in truncated.stderr
    )
