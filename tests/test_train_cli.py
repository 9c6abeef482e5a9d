"""Stage I with LeRobot's own CLIs on a value-map dataset written locally in the real format."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lerobot_aim.data.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "local/aim_synthetic"
TRAIN = [sys.executable, "-m", "lerobot.scripts.lerobot_train"]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "aim_synthetic"
    make_synthetic_dataset(root, repo_id=REPO_ID, num_episodes=4, episode_length=40)
    return root


def _common(dataset_root, output_dir, steps):
    return [
        f"--config_path={ROOT / 'configs' / 'aim_tiny.json'}",
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={dataset_root}",
        f"--output_dir={output_dir}",
        f"--steps={steps}",
        "--batch_size=8",
        "--num_workers=0",
        "--log_freq=10",
        "--save_freq=1000",
        "--policy.push_to_hub=false",
        "--wandb.enable=false",
    ]


def _run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _losses(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"step:\S+ .*? loss:([0-9.]+)", log)]


@pytest.mark.slow
def test_lerobot_train_learns_saves_and_resumes(dataset_root, tmp_path):
    out = tmp_path / "run"
    log = _run([*TRAIN, *_common(dataset_root, out, 60)])
    losses = _losses(log)
    assert len(losses) == 6, log[-2000:]
    assert losses[-1] < losses[0], losses
    for term in ("loss_rgb", "loss_map", "loss_act"):
        assert term in log
    last = out / "checkpoints" / "last" / "pretrained_model"
    for name in ("config.json", "model.safetensors", "train_config.json", "policy_preprocessor.json"):
        assert (last / name).is_file(), name

    log = _run([*TRAIN, f"--config_path={last / 'train_config.json'}", "--resume=true", "--steps=70"])
    assert re.search(r"step:70 ", log), log[-2000:]
    assert not re.search(r"step:10 ", log)  # continued, did not start over
    assert (out / "checkpoints" / "000070").is_dir()


@pytest.mark.slow
def test_accelerate_multi_process_training(dataset_root, tmp_path):
    """Two processes through accelerate (gloo on CPU): the path that several GPUs and nodes take."""
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "--main_process_port=29533",
        "-m",
        "lerobot.scripts.lerobot_train",
    ]
    log = _run([*accelerate, *_common(dataset_root, tmp_path / "ddp", 4)])
    assert "Effective batch size: 8 x 2 = 16" in log
    assert (tmp_path / "ddp" / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_resume_from_a_preset_says_which_config_to_resume_from(dataset_root, tmp_path):
    """`--resume=true` reads the folder of --config_path as the checkpoint: with a preset that is the
    presets folder, which holds no weights."""
    cmd = [*TRAIN, *_common(dataset_root, tmp_path / "run", steps=2), "--resume=true"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode != 0
    assert "is the folder of AIM's presets, not a checkpoint" in result.stderr
    assert "checkpoints/last/pretrained_model/train_config.json" in result.stderr
