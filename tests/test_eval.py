"""Evaluating AIM with LeRobot's own loop: lerobot-eval on aim_metaworld, LeRobot's metaworld env."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lerobot_aim.modeling_aim import AIMPolicy
from tests.conftest import save_tiny_checkpoint

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lerobot_eval_on_three_view_metaworld_with_predicted_video(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", ["head", "wrist_left", "wrist_right"])
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lerobot.scripts.lerobot_eval",
            f"--policy.path={checkpoint}",
            "--policy.save_predicted_video=true",
            "--env.type=aim_metaworld",
            "--env.task=button-press-v3",
            "--env.episode_length=12",
            "--env.observation_height=64",
            "--env.observation_width=64",
            "--eval.n_episodes=2",
            "--eval.batch_size=2",
            "--eval.use_async_envs=false",
            f"--output_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((out / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 2
    videos = sorted(p.name for p in (out / "videos").rglob("*.mp4"))
    assert "pred_episode_0.mp4" in videos and "eval_episode_1.mp4" in videos


def test_one_view_lerobot_metaworld_env_drives_aim(tmp_path):
    """LeRobot's --env.type=metaworld (one 480x480 view, renamed to the policy's head camera)."""
    from lerobot.envs.configs import MetaworldEnv
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.scripts.lerobot_eval import rollout

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", ["head"], image_hw=(480, 480))
    policy = AIMPolicy.from_pretrained(checkpoint)
    rename = {"observation.image": "observation.images.head"}
    pre, post = make_pre_post_processors(
        policy.config,
        str(checkpoint),
        preprocessor_overrides={"rename_observations_processor": {"rename_map": rename}},
    )
    env_cfg = MetaworldEnv(task="button-press-v3")
    envs = make_env(env_cfg, n_envs=2, use_async_envs=False)
    env = next(iter(next(iter(envs.values())).values()))
    env.set_attr("_max_episode_steps", 6)
    env_pre, env_post = make_env_pre_post_processors(env_cfg=env_cfg, policy_cfg=policy.config)
    data = rollout(env, policy, env_pre, env_post, pre, post, seeds=[0, 1])
    env.close()
    assert data["action"].shape == (2, 6, 4)
    assert torch.isfinite(data["action"]).all()
