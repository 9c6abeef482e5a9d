"""The paper's setting: RoboTwin 2.0 presets, data conversion + value maps, training, and lerobot-eval.

RoboTwin itself (SAPIEN, CuRobo, a GPU) does not run here. Its raw episodes are built in its HDF5
layout (as nested arrays: JPEG ``rgb``, ``intrinsic_cv`` / ``extrinsic_cv`` per camera, ``endpose``,
``joint_action``) with the known world of ``tests/test_annotate.py`` (two arms closing and opening
their grippers on known 3-D points), converted by ``lerobot_aim.data.robotwin``, annotated from the
recorded end-effector poses, trained on with ``lerobot-train``, and evaluated by ``lerobot-eval
--env.type=robotwin`` with the RoboTwin runtime replaced by a fake task object that returns what
RoboTwin's ``get_obs`` returns. ``tests/test_annotate.py`` covers the annotator's own options
(YAML calibration, contact sheets, overwrite, contacts source) on a RoboTwin-like dataset.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lerobot_aim import load_preset
from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import robotwin, schema
from lerobot_aim.data.annotate import AnnotateConfig, AnnotationError, annotate_dataset
from tests.annotate_datasets import SCHEDULE, STARTS, TASKS, expected_targets, look_at, trajectory, wrist_rt

ROOT = Path(__file__).resolve().parents[1]
H, W = 240, 320  # RoboTwin's D435 renders, what LeRobot's robotwin env gives
T = 30  # raw steps per episode (the converter keeps T - 1: the last step has no next action)
CAMERAS = robotwin.CAMERAS
HEAD_K = np.array([[300.0, 0.0, (W - 1) / 2], [0.0, 300.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
WRIST_K = np.array([[200.0, 0.0, (W - 1) / 2], [0.0, 200.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
HEAD_RT = look_at((0.0, -0.55, 0.75), (0.0, 0.0, 0.05))
TASK = "beat_block_hammer"
SRC_REPO, AIM_REPO = "local/robotwin_raw", "local/robotwin_aim"


def _quat(angle: float) -> list[float]:
    """A rotation about z, scalar-last (what LeRobot's env reads)."""
    return [0.0, 0.0, float(np.sin(angle / 2)), float(np.cos(angle / 2))]


def calibration(cam: str, ee: list[np.ndarray]) -> CameraCalibration:
    if cam == "head_camera":
        return CameraCalibration(HEAD_K, HEAD_RT, W, H)
    return CameraCalibration(WRIST_K, wrist_rt(ee[CAMERAS.index(cam) - 1]), W, H)


def render(calib: CameraCalibration, points) -> np.ndarray:
    img = np.full((H, W, 3), (70, 70, 80), dtype=np.uint8)
    for point, colour in points:
        uv, depth = calib.project(np.asarray(point, float)[None])
        if depth[0] > 0 and calib.in_image(uv)[0]:
            u, v = np.round(uv[0]).astype(int)
            img[max(v - 3, 0) : v + 4, max(u - 3, 0) : u + 4] = colour
    return img


def raw_episode(episode: int) -> dict:
    """One episode in RoboTwin's HDF5 layout (nested dicts of arrays, as h5py would read them)."""
    import cv2

    arms = SCHEDULE[episode]
    traj = [trajectory(*arm, STARTS[a]) for a, arm in enumerate(arms)]
    observation = {cam: {"rgb": [], "intrinsic_cv": [], "extrinsic_cv": []} for cam in CAMERAS}
    for t in range(T):
        ee = [traj[a][0][t] for a in range(2)]
        scene = [(arm[2], (220, 40, 40)) for arm in arms] + [(arm[3], (40, 200, 60)) for arm in arms]
        scene += [(p, (255, 255, 255)) for p in ee]
        for cam in CAMERAS:
            calib = calibration(cam, ee)
            observation[cam]["rgb"].append(cv2.imencode(".jpg", render(calib, scene))[1].tobytes())
            observation[cam]["intrinsic_cv"].append(calib.intrinsics)
            observation[cam]["extrinsic_cv"].append(calib.extrinsics)
    width = max(len(b) for cam in CAMERAS for b in observation[cam]["rgb"])
    for cam in CAMERAS:
        observation[cam] = {
            "rgb": np.array(observation[cam]["rgb"], dtype=f"S{width}"),
            "intrinsic_cv": np.stack(observation[cam]["intrinsic_cv"]),
            "extrinsic_cv": np.stack(observation[cam]["extrinsic_cv"]),
        }
    endpose, joint_action = {}, {}
    for a, side in enumerate(("left", "right")):
        ee, gripper = traj[a]
        quats = np.array([_quat(0.02 * (a + 1) * t) for t in range(T)])
        endpose[f"{side}_endpose"] = np.concatenate([ee, quats], axis=1)
        endpose[f"{side}_gripper"] = gripper
        joint_action[f"{side}_arm"] = np.concatenate([ee, np.zeros((T, 3))], axis=1)
        joint_action[f"{side}_gripper"] = gripper
    joint_action["vector"] = np.concatenate(
        [joint_action["left_arm"], joint_action["left_gripper"][:, None]]
        + [joint_action["right_arm"], joint_action["right_gripper"][:, None]],
        axis=1,
    )
    return {"observation": observation, "endpose": endpose, "joint_action": joint_action}


@pytest.fixture(scope="module")
def raw():
    return [raw_episode(e) for e in range(len(SCHEDULE))]


@pytest.fixture(scope="module")
def converted(raw, tmp_path_factory):
    root = tmp_path_factory.mktemp("robotwin") / "src"
    robotwin.convert_episodes(
        ((ep, TASKS[i]) for i, ep in enumerate(raw)), SRC_REPO, root, preset="ultrafast"
    )
    return root


@pytest.fixture(scope="module")
def annotated(converted, tmp_path_factory):
    import draccus

    out = tmp_path_factory.mktemp("robotwin_aim") / "aim"
    # The flags the converter prints, parsed as lerobot-aim-annotate parses its command line.
    args = [
        f"--repo_id={SRC_REPO}",
        f"--root={converted}",
        f"--output_repo_id={AIM_REPO}",
        f"--output_root={out}",
    ]
    summary = annotate_dataset(draccus.parse(AnnotateConfig, args=[*args, *robotwin.ANNOTATE_FLAGS]))
    return out, summary


@pytest.fixture(scope="module")
def trained(annotated, tmp_path_factory):
    """A checkpoint of the tiny RoboTwin preset after two lerobot-train steps on the annotated data."""
    data, _ = annotated
    out = tmp_path_factory.mktemp("train") / "run"
    cmd = [
        sys.executable, "-m", "lerobot.scripts.lerobot_train",
        f"--config_path={ROOT / 'configs' / 'aim_tiny_robotwin.json'}", f"--dataset.repo_id={AIM_REPO}",
        f"--dataset.root={data}", f"--output_dir={out}", "--steps=2", "--batch_size=2", "--num_workers=0",
        "--log_freq=1", "--save_freq=1000", "--policy.push_to_hub=false", "--wandb.enable=false",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "loss_map" in log and "loss_act" in log and "loss_rgb" in log
    return out / "checkpoints" / "last" / "pretrained_model"


# ── Presets ─────────────────────────────────────────────────────────────


def test_wan22_5b_robotwin_preset_builds_on_meta_with_the_lingbot_grid():
    from lerobot_aim.model import AIMTransformer, Context, Prediction
    from lerobot_aim.processor_aim import OBS_RGB_CANVAS, AIMPackViewsProcessorStep

    config = load_preset("aim_wan22_5b_robotwin", device="cpu")
    assert config.cameras == list(CAMERAS) and config.image_size == (256, 320)
    assert (config.codec, config.dtype, config.gradient_checkpointing) == ("wan_vae", "bfloat16", True)
    assert (
        config.wan_path == config.codec_path == config.text_encoder_path == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    )
    # 2 future latent frames x 4 steps each (Wan VAE) = 8 actions per chunk at 25 fps, all executed.
    assert (config.chunk_size, config.n_action_steps) == (8, 8)
    assert config.observation_delta_indices == list(range(-4, 9))
    # RoboTwin's three 240x320 renders: head resized to 256x320, wrists to 128x160, T-pose 384x320.
    pack = AIMPackViewsProcessorStep(cameras=config.cameras, image_size=config.image_size)
    obs = {schema.image_key(cam): torch.rand(1, 3, H, W) for cam in CAMERAS}
    canvas = pack.observation(obs)[OBS_RGB_CANVAS]
    assert canvas.shape == (1, 3, 384, 320)
    latent_hw = (384 // config.codec_spatial_stride, 320 // config.codec_spatial_stride)
    assert latent_hw == (24, 20)  # LingBot-VA's RoboTwin grid: 12 x 10 = 120 tokens per latent frame

    with torch.device("meta"):
        model = AIMTransformer(config, 14, 48).set_dtype(torch.bfloat16)
        obs_latents = torch.empty(1, 48, config.history_frames + 1, *latent_hw, dtype=torch.bfloat16)
        future = torch.empty(1, 48, config.future_frames, *latent_hw, dtype=torch.bfloat16)
        past = torch.empty(1, config.num_past_actions, 14, dtype=torch.bfloat16)
        noisy_actions = torch.empty(1, config.chunk_size, 14, dtype=torch.bfloat16)
        sigma = torch.empty(1)
        context = Context(obs_latents, past, torch.empty(1, 512, 4096, dtype=torch.bfloat16))
        tokens = model._context_tokens(context)
        pred = model(context, Prediction(future, future, noisy_actions), sigma, sigma)
    assert tokens["rgb"].hidden.shape[1] == 2 * 120 and tokens["context_action"].hidden.shape[1] == 4
    assert pred.rgb.shape == pred.value.shape == (1, 48, 2, 24, 20)
    assert pred.actions.shape == (1, 8, 14)
    counts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("rgb", "value", "action")
    }
    assert counts["rgb"] == 4_999_787_712  # Wan2.2-TI2V-5B
    assert counts["action"] < counts["value"] < counts["rgb"]


def test_presets_are_train_configs_for_the_robotwin_env():
    import draccus
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.envs.configs import RoboTwinEnvConfig

    for name in ("aim_wan22_5b_robotwin", "aim_tiny_robotwin"):
        path = ROOT / "configs" / f"{name}.json"
        cfg = draccus.parse(TrainPipelineConfig, config_path=str(path), args=["--dataset.repo_id=x/y"])
        assert cfg.policy.type == "aim" and cfg.policy.cameras == list(CAMERAS)
        assert isinstance(cfg.env, RoboTwinEnvConfig) and cfg.env.fps == 25 and cfg.env_eval_freq == 0
        assert (cfg.env.observation_height, cfg.env.observation_width, cfg.env.action_mode) == (H, W, "joint")
    tiny = load_preset("aim_tiny_robotwin", device="cpu")
    assert (tiny.codec, tiny.text_encoder, tiny.image_size) == ("pixel", "minilm", (48, 64))
    assert (tiny.chunk_size, tiny.n_action_steps) == (8, 8)  # the same 8-step chunk as the 5B preset


# ── Data: conversion and value maps ─────────────────────────────────────


def test_converted_dataset_has_the_env_layout_and_calibration(converted, raw):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.envs import env_to_policy_features
    from lerobot.envs.configs import RoboTwinEnvConfig

    ds = LeRobotDataset(SRC_REPO, root=converted)
    assert ds.meta.fps == 25 and ds.meta.total_episodes == 2 and ds.meta.total_frames == 2 * (T - 1)
    env_features = env_to_policy_features(RoboTwinEnvConfig(task=TASK))
    for key, ft in env_features.items():  # what lerobot-eval feeds is what the dataset holds
        shape = tuple(ds.meta.features[key]["shape"])
        assert shape == (ft.shape if len(shape) == 1 else (H, W, 3)) and tuple(ft.shape) in (
            (H, W, 3),
            (3, H, W),
            shape,
        )
    item = ds[3]
    np.testing.assert_allclose(
        item["observation.state"].numpy(), raw[0]["joint_action"]["vector"][3], atol=1e-6
    )
    np.testing.assert_allclose(item["action"].numpy(), raw[0]["joint_action"]["vector"][4], atol=1e-6)
    head = CameraCalibration.from_flat(
        item[schema.intrinsics_key("head_camera")].numpy(),
        item[schema.extrinsics_key("head_camera")].numpy(),
        W,
        H,
    )
    np.testing.assert_allclose(head.extrinsics, HEAD_RT, atol=1e-6)
    assert item["task"] == TASKS[0]


def test_ee_actions_compose_back_through_the_env():
    """--action_mode=ee: deltas that LeRobot's RoboTwin env (--env.action_mode=ee) turns back into poses."""
    from lerobot.envs.robotwin import _add_init_eef_pose

    endpose = robotwin.endpose_vectors(raw_episode(1))
    deltas = robotwin.ee_delta_actions(endpose)
    for t in range(T):
        back = _add_init_eef_pose(deltas[t], endpose[0])
        for start in (0, 8):
            np.testing.assert_allclose(back[start : start + 3], endpose[t, start : start + 3], atol=1e-9)
            q, ref = back[start + 3 : start + 7], endpose[t, start + 3 : start + 7]
            assert min(np.abs(q - ref).max(), np.abs(q + ref).max()) < 1e-7  # env divides by norm + 1e-8
            assert back[start + 7] == endpose[t, start + 7]
    features = robotwin.dataset_features({cam: (H, W) for cam in CAMERAS}, action_mode="ee")
    assert features["action"]["shape"] == (16,) and features["observation.state"]["shape"] == (14,)


def peak_offset(value: np.ndarray, u: float, v: float, sigma: float) -> float | None:
    """Pixels between (u, v) and the centroid of the map's upper half around it (None near a border).

    A wide Gaussian saturates to a plateau of 1.0 at 8 bits, so the centroid locates it, not the argmax.
    """
    r = int(np.ceil(2 * sigma))
    iu, iv = int(round(u)), int(round(v))
    if iu - r < 0 or iv - r < 0 or iu + r >= value.shape[1] or iv + r >= value.shape[0]:
        return None
    window = value[iv - r : iv + r + 1, iu - r : iu + r + 1]
    weights = np.clip(window - 0.5 * window.max(), 0, None)
    rows, cols = np.mgrid[iv - r : iv + r + 1, iu - r : iu + r + 1]
    centre = np.array([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()
    return float(np.hypot(centre[0] - u, centre[1] - v))


def test_value_maps_peak_where_the_known_points_project(annotated):
    """Each arm's grasp point until its gripper closes, then its release point, in all three views."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out, summary = annotated
    assert summary.events == {(0, "grasp"): 2, (0, "place"): 2, (1, "grasp"): 2, (1, "place"): 2}
    assert summary.head_camera == "head_camera" and summary.cameras == list(CAMERAS)
    ds = LeRobotDataset(AIM_REPO, root=out)
    schema.check_value_maps(ds.meta.features, list(CAMERAS))
    checked = {"grasp": 0, "release": 0, "dark": 0, "centred": 0}
    for index in range(0, len(ds), 2):
        item = ds[index]
        ep, t = int(item["episode_index"]), int(item["frame_index"])
        for cam in CAMERAS:
            value = item[schema.value_map_key(cam)].numpy().mean(0)
            calib = CameraCalibration.from_flat(
                item[schema.intrinsics_key(cam)].numpy(), item[schema.extrinsics_key(cam)].numpy(), W, H
            )
            targets = np.stack(expected_targets(ep, t))
            uv, depth = calib.project(targets)
            sigma = calib.focal_px[0] * 0.03 / depth
            for arm, (close, _, grasp, release) in enumerate(SCHEDULE[ep]):
                u, v = uv[arm]
                if not (3 <= u <= W - 4 and 3 <= v <= H - 4) or depth[arm] <= 0:
                    continue
                iu, iv = int(round(u)), int(round(v))
                assert value[iv, iu] > 0.75, (ep, t, cam, arm, value[iv, iu])
                offset = peak_offset(value, u, v, sigma[arm])
                if offset is not None and np.linalg.norm(uv - uv[arm], axis=1).max() > 4 * sigma.max():
                    assert offset < 1.5, (ep, t, cam, arm, offset)
                    checked["centred"] += 1
                checked["grasp" if t <= close else "release"] += 1
                other = np.asarray(release if t <= close else grasp, float)[None]
                ouv, odepth = calib.project(other)
                far = (np.linalg.norm(uv - ouv, axis=1) > 4 * sigma.max() + 2).all()
                if odepth[0] > 0 and calib.in_image(ouv)[0] and far:
                    ou, ov = np.round(ouv[0]).astype(int)
                    assert value[ov, ou] < 0.3, (ep, t, cam, arm, "other point lit")
                    checked["dark"] += 1
    assert min(checked.values()) > 10, checked


def test_annotate_errors_name_what_to_provide(converted, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from lerobot_aim.data.calibration import setup_cameras

    out = tmp_path / "never"
    with pytest.raises(AnnotationError) as error:  # no ee flags: the default feature is absent
        annotate_dataset(
            AnnotateConfig(repo_id=SRC_REPO, root=str(converted), output_repo_id="x/y", output_root=str(out))
        )
    message = str(error.value)
    for text in ("--ee_key", "--ee_slices", robotwin.ENDPOSE_KEY, "--fk_urdf", "--joint_slices"):
        assert text in message, (text, message)
    assert not out.exists()
    # A camera without calibration columns (e.g. LeRobot's robotwin_unified, which keeps no calibration).
    features = dict(LeRobotDatasetMetadata(SRC_REPO, root=converted).features)
    features.pop(schema.intrinsics_key("head_camera"))
    cfg = AnnotateConfig(repo_id=SRC_REPO, output_repo_id="x/y")
    with pytest.raises(AnnotationError) as error:
        setup_cameras(cfg, features, list(CAMERAS))
    message = str(error.value)
    assert "['head_camera']" in message and schema.intrinsics_key("head_camera") in message
    assert "--calibration=calib.yaml" in message and "extrinsics:" in message


# ── Training and evaluation ─────────────────────────────────────────────


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
        "lerobot-eval", f"--policy.path={checkpoint}", "--env.type=robotwin", f"--env.task={TASK}",
        "--eval.n_episodes=2", "--eval.batch_size=2", "--eval.use_async_envs=false",
        f"--env.episode_length={episode_length}", "--policy.device=cpu", "--policy.num_inference_steps=3",
        f"--output_dir={output_dir}",
    ]  # fmt: skip


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


# ── Forward kinematics (real arms that record joint positions) ──────────

# With what exported URDFs carry (materials, transmissions, meshes that are not there, massless frames).
TWO_LINK_URDF = """<?xml version="1.0"?>
<robot name="two_link">
  <material name="printed"><color rgba="1.0 0.8 0.1 1.0"/></material>
  <link name="base"/>
  <link name="upper">
    <visual><geometry><mesh filename="package://two_link/upper.dae"/></geometry></visual>
    <inertial><mass value="0.5"/><inertia ixx="1e-3" ixy="0" ixz="0" iyy="1e-3" iyz="0" izz="1e-3"/></inertial>
  </link>
  <link name="lower"><collision><geometry><mesh filename="assets/lower.stl"/></geometry></collision></link>
  <link name="tcp">
    <origin xyz="0 0 0" rpy="0 0 0"/>
    <inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="1e-9"/><inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>
  </link>
  <joint name="shoulder" type="revolute">
    <parent link="base"/><child link="upper"/>
    <origin xyz="0 0 0.1" rpy="0 0 0"/><axis xyz="0 0 1"/>
    <limit lower="-3.1" upper="3.1" effort="1" velocity="1"/>
  </joint>
  <joint name="elbow" type="revolute">
    <parent link="upper"/><child link="lower"/>
    <origin xyz="0.3 0 0" rpy="0 0 0"/><axis xyz="0 0 1"/>
    <limit lower="-3.1" upper="3.1" effort="1" velocity="1"/>
  </joint>
  <joint name="tool" type="fixed">
    <parent link="lower"/><child link="tcp"/>
    <origin xyz="0.2 0 -0.05" rpy="0 0 0"/>
  </joint>
  <transmission name="elbow_trans">
    <type>transmission_interface/SimpleTransmission</type>
    <joint name="elbow"><hardwareInterface>hardware_interface/PositionJointInterface</hardwareInterface></joint>
    <actuator name="motor2"><mechanicalReduction>1</mechanicalReduction></actuator>
  </transmission>
</robot>
"""


def planar_fk(q1, q2, base=(0.0, 0.0, 0.0)):
    x = 0.3 * np.cos(q1) + 0.2 * np.cos(q1 + q2)
    y = 0.3 * np.sin(q1) + 0.2 * np.sin(q1 + q2)
    return np.array([x, y, 0.05]) + np.asarray(base)


def rpy_matrix(r, p, y):
    """URDF's fixed-axis roll-pitch-yaw: Rz(y) @ Ry(p) @ Rx(r)."""
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def axis_angle(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_forward_kinematics_matches_urdf_semantics(tmp_path):
    """Joint origins with rpy and tilted axes, checked against URDF's definition computed here."""
    from lerobot_aim.data.kinematics import ChainFK

    rng = np.random.default_rng(1)
    joints = [
        (rng.uniform(-0.2, 0.2, 3), rng.uniform(-np.pi, np.pi, 3), rng.normal(size=3)) for _ in range(3)
    ]
    tcp = (np.array([0.05, -0.02, 0.1]), np.array([0.3, -0.4, 0.5]))
    links = "".join(f'<link name="l{i}"/>' for i in range(4)) + '<link name="tcp"/>'
    body = "".join(
        f'<joint name="j{i}" type="{"continuous" if i == 1 else "revolute"}"><parent link="l{i}"/><child link="l{i + 1}"/>'
        f'<origin xyz="{" ".join(map(str, xyz))}" rpy="{" ".join(map(str, rpy))}"/><axis xyz="{" ".join(map(str, ax))}"/>'
        '<limit lower="-3" upper="3" effort="1" velocity="1"/></joint>'
        for i, (xyz, rpy, ax) in enumerate(joints)
    )
    body += (
        f'<joint name="t" type="fixed"><parent link="l3"/><child link="tcp"/><origin xyz="{" ".join(map(str, tcp[0]))}" '
        f'rpy="{" ".join(map(str, tcp[1]))}"/></joint>'
    )
    urdf = tmp_path / "tilted.urdf"
    urdf.write_text(f'<?xml version="1.0"?><robot name="tilted">{links}{body}</robot>')
    q = rng.uniform(-2, 2, (10, 3))
    got = ChainFK([urdf], ["tcp"]).positions(q)[:, 0]
    for row, point in zip(q, got, strict=True):
        pose = np.eye(4)
        for (xyz, rpy, ax), angle in zip(joints, row, strict=True):
            step = np.eye(4)
            step[:3, :3], step[:3, 3] = rpy_matrix(*rpy) @ axis_angle(ax, angle), xyz
            pose = pose @ step
        np.testing.assert_allclose(point, (pose @ np.append(tcp[0], 1))[:3], atol=1e-9)


def test_forward_kinematics_of_a_urdf(tmp_path):
    from lerobot_aim.data.kinematics import ChainFK, KinematicsError

    urdf = tmp_path / "two_link.urdf"
    urdf.write_text(TWO_LINK_URDF)
    rng = np.random.default_rng(0)
    q = rng.uniform(-1.5, 1.5, (20, 4))
    fk = ChainFK(
        [urdf], ["tcp", "tcp"], [slice(0, 2), slice(2, 4)], base_poses=[[0, 0, 0], [0.5, 0, 0, 0, 0, 0, 1]]
    )
    assert fk.arms[0]["joints"] == ["shoulder", "elbow"]
    got = fk.positions(q)
    want = np.stack([[planar_fk(*r[:2]), planar_fk(*r[2:], base=(0.5, 0, 0))] for r in q])
    np.testing.assert_allclose(got, want, atol=1e-9)
    deg = ChainFK([urdf], ["tcp"], [slice(0, 2)], units="deg").positions(np.rad2deg(q[:, :2]))
    np.testing.assert_allclose(deg[:, 0], want[:, 0], atol=1e-9)
    with pytest.raises(KinematicsError, match=r"\['shoulder', 'elbow'\].*3 value"):
        ChainFK([urdf], ["tcp"], [slice(0, 3)])
    with pytest.raises(KinematicsError, match="No link 'gripper'.*'tcp'"):
        ChainFK([urdf], ["gripper"], [slice(0, 2)])


def test_annotate_from_joint_positions_with_fk(tmp_path):
    """--fk_urdf: a one-arm dataset recording joints (degrees) and a gripper; maps peak at the FK points."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    urdf = tmp_path / "two_link.urdf"
    urdf.write_text(TWO_LINK_URDF)
    h, w, steps = 48, 64, 16
    K = np.array([[50.0, 0, (w - 1) / 2], [0, 50.0, (h - 1) / 2], [0, 0, 1]])
    camera = CameraCalibration(K, look_at((0.0, -0.6, 0.6), (0.2, 0.2, 0.05)), w, h)
    q = np.stack([np.linspace(0.2, 1.2, steps), np.linspace(0.8, -0.4, steps)], axis=1)
    gripper = np.where((np.arange(steps) >= 5) & (np.arange(steps) < 11), 0.0, 1.0)  # 1 open (a width)
    features = {
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["shoulder", "elbow", "gripper"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["shoulder", "elbow", "gripper"]},
        schema.image_key("front"): {
            "dtype": "image",
            "shape": (h, w, 3),
            "names": ["height", "width", "channels"],
        },
    }
    src = tmp_path / "arm"
    ds = LeRobotDataset.create(repo_id="local/arm", fps=10, features=features, root=src, use_videos=False)
    for t in range(steps):
        state = np.array([*np.rad2deg(q[t]), gripper[t]], np.float32)
        ds.add_frame(
            {
                "observation.state": state,
                "action": state,
                schema.image_key("front"): np.zeros((h, w, 3), np.uint8),
                "task": "pick",
            }
        )
    ds.save_episode()
    ds.finalize()
    calib = tmp_path / "calib.yaml"
    calib.write_text(
        f"cameras:\n  front:\n    K: {K.tolist()}\n    extrinsics: {camera.extrinsics.tolist()}\n"
    )
    out = tmp_path / "arm_aim"
    cmd = [
        sys.executable, "-m", "lerobot_aim.data.annotate", "--repo_id=local/arm", f"--root={src}",
        "--output_repo_id=local/arm_aim", f"--output_root={out}", "--source=poses", f"--fk_urdf=[{urdf}]",
        "--fk_frame=[tcp]", "--joint_slices=[[0,2]]", "--joint_units=deg", "--gripper_key=observation.state",
        "--gripper_indices=[2]", "--gripper_closed_is_low=true", f"--calibration={calib}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    card = (out / "README.md").read_text()
    assert "forward kinematics" in card and "['shoulder', 'elbow']" in card
    assert "1 grasp" in card and "1 place" in card, card
    maps = LeRobotDataset("local/arm_aim", root=out)
    for t, target_step in ((0, 5), (5, 5), (8, 11), (15, 11)):
        point = planar_fk(*q[target_step])
        u, v = camera.project(point[None])[0][0]
        value = maps[t][schema.value_map_key("front")].numpy().mean(0)
        iu, iv = int(round(u)), int(round(v))
        assert value[iv, iu] > 0.9 and value[iv, iu] >= value.max() - 0.05, (t, value[iv, iu], value.max())
    with pytest.raises(AnnotationError, match="--fk_frame"):
        AnnotateConfig(repo_id="local/arm", output_repo_id="x/y", fk_urdf=[str(urdf)])
