"""``lerobot-aim-grpo`` end to end on a tiny reaching env registered only here.

The env: a point in the plane seen from above by one calibrated 32x32 camera; it reaches a goal
(success when close). Its info carries the camera calibration (flat intrinsics/extrinsics) and the
end-effector position, as the project's MetaWorld env does, so the dense reward is exercised too.
"""

import json
import sys
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.processor import PolicyProcessorPipeline
from lerobot.utils.constants import ACTION, OBS_STATE
from safetensors.torch import load_file

from lerobot_aim.modeling_aim import AIMPolicy
from lerobot_aim.processor_aim import make_aim_pre_post_processors
from lerobot_aim.rl import train_grpo
from lerobot_aim.rl.rollout import RewardSpec, StochasticActor, rollout
from tests.conftest import with_one_camera

SIZE = 32
ENV_TYPE = "aim_test_reach"
CRASHES = {"remaining": 0}  # env.step raises while > 0 (simulates a dying env worker)

# Camera 2 m above the plane looking down: world x, y in [-1, 1] fill the image.
_C = (SIZE - 1) / 2
INTRINSICS = np.array([[2 * _C, 0, _C], [0, 2 * _C, _C], [0, 0, 1.0]])
EXTRINSICS = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2]])


class ReachEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, episode_length: int = 16, with_calibration: bool = True):
        self.with_calibration = with_calibration
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Dict({"head": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)}),
                "agent_pos": gym.spaces.Box(-1, 1, (2,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self._max_episode_steps = episode_length
        self.task = "reach"
        self.task_description = "move the dot to the red goal"
        self.render_mode = "rgb_array"
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)
        self.t = 0

    def _pixel(self, xy):
        uv = INTRINSICS @ (EXTRINSICS @ np.array([xy[0], xy[1], 0.0, 1.0]))
        return np.clip(np.round(uv[:2] / uv[2]).astype(int), 0, SIZE - 1)

    def render(self):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        for xy, color in ((self.goal, (255, 0, 0)), (self.pos, (255, 255, 255))):
            u, v = self._pixel(xy)
            img[max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2] = color
        return img

    def _obs(self):
        return {"pixels": {"head": self.render()}, "agent_pos": self.pos.astype(np.float32)}

    def _info(self, success=False):
        if not self.with_calibration:
            return {"is_success": success}
        return {
            "is_success": success,
            "ee_pos": np.array([*self.pos, 0.0]),
            "calibration": {
                "head": {"intrinsics": INTRINSICS.reshape(9), "extrinsics": EXTRINSICS.reshape(12)}
            },
        }

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, 0.8, 2)
        self.goal = self.np_random.uniform(-0.8, 0.8, 2)
        self.t = 0
        return self._obs(), self._info()

    def step(self, action):
        if CRASHES["remaining"] > 0:
            CRASHES["remaining"] -= 1
            raise RuntimeError("simulated env worker crash")
        self.t += 1
        self.pos = np.clip(self.pos + 0.15 * np.clip(action, -1, 1), -1, 1)
        distance = float(np.linalg.norm(self.pos - self.goal))
        success = distance < 0.15
        return self._obs(), -distance, success, self.t >= self._max_episode_steps, self._info(success)


if ENV_TYPE not in EnvConfig.get_known_choices():

    @EnvConfig.register_subclass(ENV_TYPE)
    @dataclass
    class ReachEnvConfig(EnvConfig):
        task: str = "reach"
        fps: int = 10
        episode_length: int = 16
        features: dict = field(
            default_factory=lambda: {
                ACTION: PolicyFeature(FeatureType.ACTION, (2,)),
                "pixels/head": PolicyFeature(FeatureType.VISUAL, (SIZE, SIZE, 3)),
                "agent_pos": PolicyFeature(FeatureType.STATE, (2,)),
            }
        )
        features_map: dict = field(
            default_factory=lambda: {
                ACTION: ACTION,
                "pixels/head": "observation.images.head",
                "agent_pos": OBS_STATE,
            }
        )

        @property
        def gym_kwargs(self) -> dict:
            return {"episode_length": self.episode_length}

        def create_envs(self, n_envs: int, use_async_envs: bool = False):
            """One vector env per comma-separated task name (all the same reaching task)."""
            make = [lambda: ReachEnv(self.episode_length) for _ in range(n_envs)]
            mode = gym.vector.AutoresetMode.SAME_STEP
            return {
                task: {0: gym.vector.SyncVectorEnv(make, autoreset_mode=mode)}
                for task in self.task.split(",")
            }


def _tiny_policy(cfg):
    cfg.num_layers = 1
    cfg.num_inference_steps = 3
    with_one_camera(cfg, size=SIZE)
    pre, post = make_aim_pre_post_processors(cfg, {ACTION: {"mean": torch.zeros(2), "std": torch.ones(2)}})
    return AIMPolicy(cfg).eval(), pre, post


@pytest.fixture
def stage1(tmp_path, tiny_config):
    """A Stage I checkpoint of the tiny AIM policy (random weights) with its processors."""
    policy, pre, post = _tiny_policy(tiny_config)
    path = tmp_path / "stage1"
    policy.save_pretrained(path)
    pre.save_pretrained(path)
    post.save_pretrained(path)
    return path


def test_group_seeds_give_each_group_one_initial_state():
    seeds = train_grpo.group_seeds(7, iteration=3, num_initial_states=2, group_size=3)
    assert seeds == [13, 13, 13, 14, 14, 14]
    assert set(train_grpo.group_seeds(7, 4, 2, 3)).isdisjoint(seeds)
    env = gym.vector.SyncVectorEnv([ReachEnv] * 4)
    env.reset(seed=[5, 5, 6, 6])
    positions = [e.pos.copy() for e in env.envs]
    assert np.array_equal(positions[0], positions[1]) and not np.array_equal(positions[1], positions[2])


def test_rollout_records_chunks_and_falls_back_to_sparse_reward_without_calibration(tiny_config):
    policy, pre, post = _tiny_policy(tiny_config)
    env = gym.vector.SyncVectorEnv(
        [lambda: ReachEnv(10, with_calibration=False)] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    identity = PolicyProcessorPipeline(steps=[])
    actor = StochasticActor(policy, sde_noise=0.5)
    with pytest.warns(RuntimeWarning, match="sparse reward only"):
        result = rollout(
            env, actor, identity, identity, pre, post, RewardSpec(lambda_d=1.0, lambda_s=2.0), seeds=[1, 1]
        )
    steps, every = result.valid.shape[1], policy.config.n_action_steps
    chunks = -(-steps // every)  # a new chunk every n_action_steps until the last episode ends
    assert result.trajectories.batch_size == 2 * chunks and result.chunk_env.tolist() == [0, 1] * chunks
    assert result.chunk_valid.tolist() == result.valid[:, ::every].T.reshape(-1).tolist()
    assert torch.count_nonzero(result.dense) == 0 and not result.has_geometry.any()
    assert result.returns.tolist() == pytest.approx((2.0 * (result.success & result.valid).sum(-1)).tolist())
    sampled = result.trajectories.actions[:, -1]
    assert not torch.equal(sampled[0], sampled[1])  # same state and history, different SDE noise


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["lerobot-aim-grpo", *args])
    return train_grpo.main()


def _metrics(out):
    return [json.loads(line) for line in (out / train_grpo.METRICS_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_grpo_cli_trains_saves_resumes_and_survives_an_env_crash(monkeypatch, tmp_path, stage1):
    out = tmp_path / "grpo"
    common = [
        f"--policy.path={stage1}",
        "--policy.device=cpu",
        f"--env.type={ENV_TYPE}",
        "--env.episode_length=12",
        f"--output_dir={out}",
        "--group_size=2",
        "--num_initial_states=1",
        "--learning_rate=1e-3",
        "--save_every=1",
        "--eval_every=2",
        "--eval_episodes=2",
        "--sde_noise=0.7",
        "--wandb.enable=false",
    ]
    CRASHES["remaining"] = 1
    _run(monkeypatch, *common, "--iterations=2")
    logs = _metrics(out)
    assert [log["iteration"] for log in logs] == [1, 2]
    assert logs[0]["env_restarts"] == 1  # the crashed env was rebuilt, the run went on
    for key in ("success_rate", "dense_reward", "return", "kl_old", "kl_ref", "clip_frac"):
        assert all(np.isfinite(log[key]) for log in logs), key
    assert logs[0]["kl_ref"] == pytest.approx(0.0, abs=1e-6) and logs[1]["kl_ref"] > 0  # moved after update 1
    assert all(log["chunks"] > 0 for log in logs) and "eval_pc_success" in logs[1]
    assert any(log["dense_reward"] > 0 for log in logs)  # read from the predicted maps via the calibration

    checkpoint = out / "checkpoints" / "000002" / "pretrained_model"
    for name in (
        "config.json",
        "model.safetensors",
        "policy_preprocessor.json",
        "policy_postprocessor.json",
        "grpo_config.json",
    ):
        assert (checkpoint / name).is_file(), name
    assert (out / "checkpoints" / "last").resolve() == checkpoint.parent.resolve()
    assert (checkpoint.parent / "training_state" / "optimizer_state.safetensors").is_file()

    before, after = load_file(stage1 / "model.safetensors"), load_file(checkpoint / "model.safetensors")
    action_keys = [k for k in before if k.startswith("model.action.")]
    # The context's action tokens are embedded by a frozen copy of the Stage I action stream.
    copies = {k.replace("model.action.", "model.context_action.", 1): k for k in action_keys}
    assert after.keys() == before.keys() | copies.keys()
    assert all(torch.equal(after[copy], before[k]) for copy, k in copies.items())
    assert any(not torch.equal(before[k], after[k]) for k in action_keys)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("model.action."))
    reloaded = AIMPolicy.from_pretrained(checkpoint)
    assert reloaded.config.context_action_stream
    assert torch.equal(reloaded.model.action.proj_out.weight, after["model.action.proj_out.weight"])
    assert torch.equal(reloaded.model.context_action.proj_out.weight, before["model.action.proj_out.weight"])

    # Resume: same command, one more iteration, continues from checkpoints/last.
    with pytest.raises(FileExistsError, match="resume"):
        _run(monkeypatch, *common, "--iterations=3")
    with open(out / train_grpo.METRICS_FILE, "a") as f:  # an iteration logged after the last checkpoint
        f.write(json.dumps({"iteration": 3, "lost": True}) + "\n")
    _run(monkeypatch, *common, "--iterations=3", "--resume=true")
    assert [log["iteration"] for log in _metrics(out)] == [1, 2, 3] and "lost" not in _metrics(out)[-1]
    assert (out / "checkpoints" / "000003" / "pretrained_model" / "model.safetensors").is_file()
    resumed = load_file(out / "checkpoints" / "000003" / "pretrained_model" / "model.safetensors")
    assert any(not torch.equal(after[k], resumed[k]) for k in action_keys)


def test_grpo_takes_the_tasks_of_a_multi_task_env_in_turn(monkeypatch, tmp_path, stage1):
    out = tmp_path / "grpo"
    _run(
        monkeypatch,
        f"--policy.path={stage1}",
        "--policy.device=cpu",
        f"--env.type={ENV_TYPE}",
        "--env.task=reach,reach_again",
        "--env.episode_length=4",
        f"--output_dir={out}",
        "--group_size=2",
        "--iterations=3",
        "--eval_every=3",
        "--eval_episodes=1",
        "--track_ref_kl=false",
        "--wandb.enable=false",
    )
    logs = _metrics(out)
    assert [log["task"] for log in logs] == ["reach/0", "reach_again/0", "reach/0"]
    assert 0.0 <= logs[-1]["eval_pc_success"] <= 100.0  # averaged over both tasks


@pytest.mark.slow
def test_grpo_checkpoint_runs_in_lerobot_eval(monkeypatch, tmp_path, stage1):
    out = tmp_path / "grpo"
    _run(
        monkeypatch,
        f"--policy.path={stage1}",
        "--policy.device=cpu",
        f"--env.type={ENV_TYPE}",
        "--env.episode_length=6",
        f"--output_dir={out}",
        "--group_size=2",
        "--iterations=1",
        "--track_ref_kl=false",
        "--kl_weight=0",
    )
    from lerobot.scripts import lerobot_eval

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()  # lerobot-eval makes it only when it writes videos
    argv = [
        "lerobot-eval",
        f"--policy.path={out / 'checkpoints' / 'last' / 'pretrained_model'}",
        f"--env.type={ENV_TYPE}",
        "--env.episode_length=6",
        "--eval.n_episodes=2",
        "--eval.batch_size=2",
        "--eval.use_async_envs=false",
        f"--output_dir={eval_dir}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(lerobot_eval, "eval_policy_all", _no_video(lerobot_eval.eval_policy_all))
    lerobot_eval.eval_main()
    info = json.loads((eval_dir / "eval_info.json").read_text())
    assert 0.0 <= info["overall"]["pc_success"] <= 100.0


def _no_video(eval_policy_all):
    def wrapped(*args, **kwargs):
        kwargs["max_episodes_rendered"] = 0  # lerobot-eval renders 10 videos by default: slow and off-topic
        kwargs["videos_dir"] = None
        return eval_policy_all(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group_size=1"], "--group_size must be >= 2"),
        (["--sde_noise=-1"], "--sde_noise must be >= 0"),
    ],
)
def test_grpo_cli_answers_a_bad_setting_in_one_line(monkeypatch, capsys, stage1, args, message):
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, f"--policy.path={stage1}", "--env.type=aim_metaworld", *args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"lerobot-aim-grpo: error: {message}" in err and "Traceback" not in err


def test_grpo_cli_names_a_missing_checkpoint(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit):
        _run(monkeypatch, f"--policy.path={tmp_path / 'outputs' / 'missing'}", "--env.type=aim_metaworld")
    err = capsys.readouterr().err
    assert "No checkpoint at" in err and "pretrained_model" in err and "Repo id" not in err
