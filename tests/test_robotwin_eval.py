"""RoboTwin 2.0's recipe end to end: ``lerobot-train`` on the annotated data (``tests/robotwin_helpers.py``),
then ``lerobot-eval --env.type=robotwin`` with the RoboTwin runtime replaced by a fake task object that
returns what RoboTwin's ``get_obs`` returns, in joint and end-effector action modes.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lerobot_aim import load_preset
from lerobot_aim.data import schema
from tests.robotwin_helpers import AIM_REPO, CAMERAS, HEAD_K, HEAD_RT, ROOT, TASK, H, W


@pytest.fixture(scope="module")
def trained(robotwin_annotated, tmp_path_factory):
    """A checkpoint of the tiny RoboTwin preset after two lerobot-train steps on the annotated data."""
    data, _ = robotwin_annotated
    out = tmp_path_factory.mktemp("train") / "run"
    cmd = [
        sys.executable,
        "-m",
        "lerobot.scripts.lerobot_train",
        f"--config_path={ROOT / 'configs' / 'aim_tiny_robotwin.json'}",
        f"--dataset.repo_id={AIM_REPO}",
        f"--dataset.root={data}",
        f"--output_dir={out}",
        "--steps=2",
        "--batch_size=2",
        "--num_workers=0",
        "--log_freq=1",
        "--save_freq=1000",
        "--policy.push_to_hub=false",
        "--wandb.enable=false",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "loss_map" in log and "loss_act" in log and "loss_rgb" in log
    return out / "checkpoints" / "last" / "pretrained_model"


class FakeRoboTwinTask:
    """What LeRobot's RoboTwinEnv calls on a RoboTwin task: setup_demo, get_obs, take_action, check_success.

    Succeeds after ``SUCCESS_STEP`` actions when set up with an even seed.
    """

    SUCCESS_STEP = 4
    log: list = []

    def setup_demo(self, seed=0, is_test=True, **kwargs):
        self.seed, self.steps = seed, 0
        self.qpos = np.zeros(14)
        self.endpose = np.array([-0.25, -0.2, 0.25, 0, 0, 0, 1, 1, 0.25, -0.2, 0.25, 0, 0, 0, 1, 1], float)

    def get_obs(self):
        rng = np.random.default_rng(self.seed * 1000 + self.steps)
        cams = {
            cam: {
                "rgb": rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
                "intrinsic_cv": HEAD_K,
                "extrinsic_cv": HEAD_RT,
            }
            for cam in CAMERAS
        }
        e = self.endpose
        return {
            "observation": cams,
            "joint_action": {"vector": self.qpos.copy()},
            "endpose": {
                "left_endpose": list(e[:7]),
                "left_gripper": e[7],
                "right_endpose": list(e[8:15]),
                "right_gripper": e[15],
            },
        }

    def take_action(self, action, action_type="qpos"):
        self.steps += 1
        FakeRoboTwinTask.log.append((self.seed, action_type, np.array(action, dtype=float)))
        if action_type == "qpos":
            self.qpos = np.asarray(action, float)
        else:
            self.endpose = np.asarray(action, float)

    def check_success(self):
        return self.seed % 2 == 0 and self.steps >= self.SUCCESS_STEP

    def close_env(self, clear_cache=False):
        pass


@pytest.fixture
def fake_robotwin(monkeypatch):
    import lerobot.envs.robotwin as env_module

    monkeypatch.setattr(env_module, "_load_robotwin_task", lambda name: FakeRoboTwinTask)
    monkeypatch.setattr(env_module, "_load_robotwin_setup_kwargs", lambda name: {})
    FakeRoboTwinTask.log = []
    return FakeRoboTwinTask


def eval_command(checkpoint, output_dir, episode_length=10) -> list[str]:
    """docs/robotwin.md's evaluation command, small: 2 episodes (100 per task there), CPU, 3 denoising steps."""
    return [
        "lerobot-eval",
        f"--policy.path={checkpoint}",
        "--env.type=robotwin",
        f"--env.task={TASK}",
        "--eval.n_episodes=2",
        "--eval.batch_size=2",
        "--eval.use_async_envs=false",
        f"--env.episode_length={episode_length}",
        "--policy.device=cpu",
        "--policy.num_inference_steps=3",
        f"--output_dir={output_dir}",
    ]


def test_train_then_lerobot_eval_on_robotwin(trained, fake_robotwin, monkeypatch, tmp_path):
    """lerobot-eval's own main, in process: 2 envs in a batch, AIM plans 8-step chunks of 14-d joints."""
    from lerobot.scripts import lerobot_eval

    config = json.loads((trained / "config.json").read_text())
    assert config["type"] == "aim" and config["cameras"] == list(CAMERAS)
    assert config["output_features"]["action"]["shape"] == [14]
    out = tmp_path / "eval"
    monkeypatch.setattr(sys, "argv", eval_command(trained, out))
    lerobot_eval.main()
    info = json.loads((out / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 2
    assert info["overall"]["pc_success"] == 50.0  # the even seed succeeds at step 4, the odd one runs out
    seeds = sorted({seed for seed, _, _ in fake_robotwin.log})
    assert len(seeds) >= 2 and all(kind == "qpos" for _, kind, _ in fake_robotwin.log)
    actions = np.stack([a for _, _, a in fake_robotwin.log])
    assert actions.shape[1] == 14 and np.isfinite(actions).all()
    assert len(actions) >= 10 + FakeRoboTwinTask.SUCCESS_STEP
    assert list((out / "videos").rglob("*.mp4"))


def save_ee_checkpoint(path: Path) -> Path:
    """A random tiny RoboTwin checkpoint with 16-d end-effector actions (and LeRobot's 14-d state)."""
    from lerobot.configs import FeatureType, PolicyFeature

    from lerobot_aim.modeling_aim import AIMPolicy
    from lerobot_aim.processor_aim import make_aim_pre_post_processors

    config = load_preset("aim_tiny_robotwin", num_layers=2, num_inference_steps=3, device="cpu")
    config.input_features = {
        schema.image_key(c): PolicyFeature(FeatureType.VISUAL, (3, H, W)) for c in CAMERAS
    }
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (14,))
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (16,))}
    stats = {
        "action": {"mean": torch.zeros(16), "std": torch.full((16,), 0.01)},
        "observation.state": {"mean": torch.zeros(14), "std": torch.ones(14)},
    }
    policy = AIMPolicy(config)
    pre, post = make_aim_pre_post_processors(config, stats)
    for thing in (policy, pre, post):
        thing.save_pretrained(path)
    return path


def test_ee_action_mode_and_action_size_check(trained, fake_robotwin, tmp_path):
    """--env.action_mode=ee: a 16-d checkpoint drives it; the 14-d joint checkpoint is refused by name."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.envs.configs import RoboTwinEnvConfig
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.policies.factory import make_policy, make_pre_post_processors
    from lerobot.scripts.lerobot_eval import rollout

    env_cfg = RoboTwinEnvConfig(task=TASK, action_mode="ee", episode_length=5)
    checkpoint = save_ee_checkpoint(tmp_path / "ee")
    cfg = PreTrainedConfig.from_pretrained(checkpoint)
    cfg.pretrained_path = checkpoint
    policy = make_policy(cfg, env_cfg=env_cfg)
    pre, post = make_pre_post_processors(policy.config, str(checkpoint))
    envs = make_env(env_cfg, n_envs=2, use_async_envs=False)
    env = envs[TASK][0]
    env_pre, env_post = make_env_pre_post_processors(env_cfg=env_cfg, policy_cfg=policy.config)
    data = rollout(env, policy, env_pre, env_post, pre, post, seeds=[1, 3])
    env.close()
    assert data["action"].shape == (2, 5, 16)
    sent = [a for _, kind, a in fake_robotwin.log if kind == "ee"]
    assert len(sent) == 10 and all(a.shape == (16,) for a in sent)
    for pose in sent:  # composed onto the initial pose by the env: unit quaternions
        assert abs(np.linalg.norm(pose[3:7]) - 1) < 1e-6 and abs(np.linalg.norm(pose[11:15]) - 1) < 1e-6

    joint_cfg = PreTrainedConfig.from_pretrained(trained)
    joint_cfg.pretrained_path = trained
    with pytest.raises(ValueError, match=r"another action size.*action dim 16"):
        make_policy(joint_cfg, env_cfg=env_cfg)
