"""`--env.type=aim_metaworld`: registration, observations, calibration against the renderer,
contacts along a scripted pick-and-place, and vector envs through LeRobot's own factory."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pickle
import subprocess
import sys

import numpy as np
import pytest
from lerobot.envs.configs import EnvConfig
from lerobot.envs.factory import make_env, make_env_config
from lerobot.envs.utils import env_to_policy_features, preprocess_observation

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.envs import (
    MAX_CONTACT_POINTS,
    AIMMetaWorldEnv,
    AIMMetaWorldEnvConfig,
    parse_cameras,
    resolve_tasks,
)

SIZE = 64
CAMERAS = ["head", "wrist_left", "wrist_right"]


@pytest.fixture(scope="module")
def env():
    env = AIMMetaWorldEnv("pick-place-v3", observation_height=SIZE, observation_width=SIZE)
    yield env
    env.close()


def test_config_is_registered_with_policy_features():
    assert EnvConfig.get_choice_class("aim_metaworld") is AIMMetaWorldEnvConfig
    cfg = make_env_config("aim_metaworld", observation_height=SIZE, observation_width=2 * SIZE)
    assert cfg.type == "aim_metaworld" and cfg.camera_names == CAMERAS
    features = env_to_policy_features(cfg)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "action": (4,),
        "observation.state": (4,),
        **{f"observation.images.{cam}": (3, SIZE, 2 * SIZE) for cam in CAMERAS},
    }
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.gym_kwargs["observation_width"] == 2 * SIZE

    state_only = AIMMetaWorldEnvConfig(obs_type="agent_pos")
    assert set(env_to_policy_features(state_only)) == {"action", "observation.state"}
    assert resolve_tasks("easy,pick-place-v3")["pick-place-v3"] == ["pick-place-v3"]
    assert "button-press-v3" in resolve_tasks("easy")["easy"]
    assert parse_cameras("head:corner2,topview") == [("head", "corner2"), ("topview", "topview")]
    with pytest.raises(ValueError, match="Unknown MetaWorld task"):
        AIMMetaWorldEnvConfig(task="pick-place-v9")


def test_importing_the_plugin_registers_the_env_without_importing_mujoco():
    code = (
        "import sys, lerobot_aim\n"
        "from lerobot.envs.configs import EnvConfig\n"
        "print(EnvConfig.get_choice_class('aim_metaworld').__name__, 'mujoco' in sys.modules, "
        "'metaworld' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["AIMMetaWorldEnvConfig", "False", "False"]


def _check_info(info):
    assert isinstance(info["is_success"], bool) and info["task"] == "pick-place-v3"
    assert info["raw_obs"].shape == (39,)
    for key in ("ee_pos", "hand_pos", "object_pos", "object_com"):
        assert info[key].shape == (3,), key
    assert isinstance(info["gripper_command"], float) and isinstance(info["gripper_opening"], float)
    contact = info["contact"]
    assert contact["pad_contacts"].shape == (2,) and contact["pad_contacts"].dtype == bool
    assert contact["points"].shape == contact["support_points"].shape == (MAX_CONTACT_POINTS, 3)
    assert contact["pad_points"].shape == (2, 3) and contact["pad_forces"].shape == (2,)
    assert set(info["cameras"]) == set(CAMERAS)
    for cal in info["cameras"].values():
        assert cal["intrinsics"].shape == (9,) and cal["extrinsics"].shape == (12,)
        assert cal["intrinsics"].dtype == np.float32


def test_reset_and_step_observations(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert set(obs) == {"pixels", "agent_pos"} and set(obs["pixels"]) == set(CAMERAS)
    for image in obs["pixels"].values():
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.std() > 5
    np.testing.assert_allclose(obs["agent_pos"], info["raw_obs"][:4], rtol=1e-6)
    _check_info(info)
    assert not info["contact"]["gripper_object"]  # the gripper starts above the object

    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0, -1.0], dtype=np.float32))
    assert env.observation_space.contains(obs) and isinstance(reward, float)
    assert not terminated and not truncated and info["step"] == 1
    _check_info(info)
    assert env.task_description == "Pick and place a puck to a goal" and env._max_episode_steps == 500
    assert env.render().shape == (SIZE, 3 * SIZE, 3)


def _segmentation(env, name):
    """Geom id per pixel of camera `name` as stored (flipped like the observation), -1 elsewhere."""
    import mujoco

    mw = env.unwrapped_metaworld
    with mujoco.Renderer(mw.model, SIZE, SIZE) as renderer:
        renderer.enable_segmentation_rendering()
        renderer.update_scene(mw.data, camera=dict(env.camera_pairs)[name])
        seg = renderer.render()
    ids = np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1)
    return np.flip(ids, (0, 1)) if env.scene_cameras.flipped[name] else ids


def _geoms_near(ids, uv, radius=1):
    u, v = np.round(uv).astype(int)
    return set(ids[max(v - radius, 0) : v + radius + 1, max(u - radius, 0) : u + radius + 1].ravel().tolist())


def test_calibration_projects_onto_the_rendered_object_and_gripper(env):
    mw = env.unwrapped_metaworld
    object_geoms = {mw.model.geom("objGeom").id}
    gripper_geoms = set(np.flatnonzero(env.contact_geoms.gripper).tolist())
    _, info = env.reset(seed=0)
    head_extrinsics = info["cameras"]["head"]["extrinsics"]
    wrist_extrinsics = info["cameras"]["wrist_right"]["extrinsics"]
    for name in CAMERAS:  # at reset every view sees the puck
        cal = env.camera_calibration(name)
        uv, depth = cal.project(info["object_com"][None])
        flat = info["cameras"][name]  # describes the stored (flipped) image with no flags
        stored = CameraCalibration.from_flat(flat["intrinsics"], flat["extrinsics"], cal.width, cal.height)
        np.testing.assert_allclose(stored.project(info["object_com"][None])[0], uv, atol=1e-3)
        assert cal.in_image(uv)[0] and depth[0] > 0
        assert _geoms_near(_segmentation(env, name), uv[0]) & object_geoms, name
    # The tool-centre point lies between the fingers in the head view.
    uv, _ = env.camera_calibration("head").project(info["ee_pos"][None])
    assert _geoms_near(_segmentation(env, "head"), uv[0], radius=2) & gripper_geoms

    # Moving the hand along +x moves its head-view projection the way the renderer moves the gripper.
    head = env.camera_calibration("head")
    seg0 = np.isin(_segmentation(env, "head"), list(gripper_geoms))
    uv0, _ = head.project(info["hand_pos"][None])
    for _ in range(25):
        _, _, _, _, info = env.step(np.array([1.0, 0.0, 0.0, -1.0], dtype=np.float32))
    seg1 = np.isin(_segmentation(env, "head"), list(gripper_geoms))
    uv1, _ = env.camera_calibration("head").project(info["hand_pos"][None])
    rendered_shift = np.argwhere(seg1).mean(0)[::-1] - np.argwhere(seg0).mean(0)[::-1]  # (du, dv)
    projected_shift = uv1[0] - uv0[0]
    assert np.linalg.norm(projected_shift) > 3
    assert np.dot(rendered_shift, projected_shift) > 0.7 * np.linalg.norm(rendered_shift) * np.linalg.norm(
        projected_shift
    )
    # Fixed head camera, wrist cameras follow the hand.
    np.testing.assert_allclose(info["cameras"]["head"]["extrinsics"], head_extrinsics)
    assert not np.allclose(info["cameras"]["wrist_right"]["extrinsics"], wrist_extrinsics, atol=1e-3)


def test_scripted_expert_succeeds_and_contacts_mark_the_grasp(env):
    _, info = env.reset(seed=0)
    records = []
    for _ in range(500):
        obs, _, terminated, truncated, info = env.step(env.expert_action())
        records.append(info)
        if terminated or truncated:
            break
    assert terminated and info["is_success"] and len(records) < 500
    assert obs["pixels"]["head"].shape == (SIZE, SIZE, 3)

    both_pads = [i for i, r in enumerate(records) if r["contact"]["pad_contacts"].all()]
    assert both_pads, "the fingers never both touched the puck"
    grasp = records[both_pads[0]]
    assert grasp["gripper_command"] > 0  # closing
    assert not any(r["contact"]["gripper_object"] for r in records[: max(both_pads[0] - 5, 0)])
    contact = grasp["contact"]
    assert 0 < contact["num_points"] <= MAX_CONTACT_POINTS
    points = contact["points"][: contact["num_points"]]
    assert np.isnan(contact["points"][contact["num_points"] :]).all()
    assert np.linalg.norm(points - grasp["object_com"], axis=1).max() < 0.05
    assert np.linalg.norm(contact["pad_points"] - grasp["ee_pos"], axis=1).max() < 0.05
    assert (contact["pad_forces"] > 0).all()
    # The puck is lifted: it leaves the table (no support contact) and rises.
    assert records[-1]["contact"]["num_support_points"] == 0
    assert records[-1]["object_com"][2] > records[0]["object_com"][2] + 0.005


def test_state_only_mode_truncates_and_renders_on_demand():
    env = AIMMetaWorldEnv(
        "button-press-v3", cameras="head:corner2", obs_type="agent_pos", episode_length=5, fps=80
    )
    try:
        obs, info = env.reset(seed=1)
        assert set(obs) == {"agent_pos"} and obs["agent_pos"].shape == (4,)
        for step in range(5):
            obs, _, terminated, truncated, info = env.step(env.expert_action())
            assert truncated == (step == 4) and not terminated
        frames = env.render_cameras(height=32, width=48)
        assert frames["head"].shape == (32, 48, 3)
        assert env.camera_calibration("head", height=32, width=48).width == 48
    finally:
        env.close()


def _check_vector_obs(obs, info, n):
    for cam in CAMERAS:
        assert obs["pixels"][cam].shape == (n, SIZE, SIZE, 3)
    assert obs["agent_pos"].shape == (n, 4)
    assert info["is_success"].shape == (n,)
    assert info["cameras"]["head"]["intrinsics"].shape == (n, 9)
    assert info["contact"]["points"].shape == (n, MAX_CONTACT_POINTS, 3)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_vector_env_through_lerobot_make_env(use_async):
    cfg = AIMMetaWorldEnvConfig(task="pick-place-v3", observation_height=SIZE, observation_width=SIZE)
    envs = make_env(cfg, n_envs=2, use_async_envs=use_async)
    assert list(envs) == ["pick-place-v3"] and list(envs["pick-place-v3"]) == [0]
    vec = envs["pick-place-v3"][0]
    try:
        obs, info = vec.reset(seed=[0, 1])
        _check_vector_obs(obs, info, 2)
        assert not np.allclose(info["object_pos"][0], info["object_pos"][1])  # seeds set the puck
        assert list(vec.call("task_description")) == ["Pick and place a puck to a goal"] * 2
        assert vec.call("_max_episode_steps")[0] == cfg.episode_length
        policy_obs = preprocess_observation(obs)
        expected = set(env_to_policy_features(cfg)) - {"action"}
        assert expected <= set(policy_obs)
        assert tuple(policy_obs["observation.images.head"].shape) == (2, 3, SIZE, SIZE)
        obs, reward, terminated, truncated, info = vec.step(np.zeros((2, 4), dtype=np.float32))
        _check_vector_obs(obs, info, 2)
        assert reward.shape == terminated.shape == truncated.shape == (2,)
    finally:
        vec.close()
