"""The synthetic AIM dataset: a real LeRobotDataset on disk with value maps that follow the task."""

import copy
import json

import numpy as np
import pytest
import torch

from lerobot_aim.data import schema
from lerobot_aim.data.synthetic import camera_matrices, make_synthetic_dataset, project, simulate_episode

REPO_ID = "local/aim_synthetic_test"
CAMERAS = ("head", "wrist")
SIZE = (32, 32)
EPISODES, LENGTH, SEED = 2, 30, 3


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "ds"
    make_synthetic_dataset(
        root,
        repo_id=REPO_ID,
        num_episodes=EPISODES,
        episode_length=LENGTH,
        cameras=CAMERAS,
        image_size=SIZE,
        seed=SEED,
        with_calibration=True,
    )
    return root


@pytest.fixture(scope="module")
def dataset(built):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(REPO_ID, root=built)


def _pixel(chw: torch.Tensor) -> np.ndarray:
    """(u, v) of the brightest pixel of a CHW map."""
    grey = chw.float().mean(0)
    v, u = np.unravel_index(int(grey.argmax()), grey.shape)
    return np.array([u, v], dtype=np.float64)


def test_reloads_with_schema_features(dataset):
    meta = dataset.meta
    assert meta.total_episodes == EPISODES
    assert len(dataset) == EPISODES * LENGTH
    expected = {
        "observation.state",
        "action",
        *(schema.image_key(c) for c in CAMERAS),
        *schema.value_map_features(list(CAMERAS), *SIZE),
        *schema.calibration_features(list(CAMERAS)),
    }
    assert expected <= set(meta.features)
    assert set(meta.video_keys) == {schema.image_key(c) for c in CAMERAS} | {
        schema.value_map_key(c) for c in CAMERAS
    }
    for cam in CAMERAS:
        assert tuple(meta.features[schema.value_map_key(cam)]["shape"]) == (*SIZE, 3)
        assert (
            meta.features[schema.image_key(cam)]["shape"][:2]
            == meta.features[schema.value_map_key(cam)]["shape"][:2]
        )
    tasks = {dataset[i]["task"] for i in (0, LENGTH)}
    assert tasks == {"move the red block to the goal", "move the blue block to the goal"}

    item = dataset[0]
    for cam in CAMERAS:
        img, vmap = item[schema.image_key(cam)], item[schema.value_map_key(cam)]
        assert img.shape == vmap.shape == (3, *SIZE)
        assert float(vmap.min()) >= 0.0 and float(vmap.max()) <= 1.0
    assert item["observation.state"].shape == item["action"].shape == (2,)


def test_schema_info_survives(built, dataset):
    info = json.loads((built / "meta" / "info.json").read_text())
    for cam in CAMERAS:
        for features in (info["features"], dataset.meta.features):
            ft_info = features[schema.value_map_key(cam)]["info"]
            assert ft_info["aim.value_map_schema"] == schema.SCHEMA_VERSION
            assert ft_info["aim.head_camera"] == "head"
            assert ft_info["video.codec"] == "h264"  # LeRobot's probed entries sit beside ours
    assert schema.head_camera(dataset.meta.features) == "head"
    assert schema.dataset_cameras(dataset.meta.features) == list(CAMERAS)


def test_frames_match_the_scripted_episodes(dataset):
    for ep_index in range(EPISODES):
        ep = simulate_episode(ep_index, LENGTH, SEED)
        states = np.stack(
            [dataset[ep_index * LENGTH + t]["observation.state"].numpy() for t in range(LENGTH)]
        )
        np.testing.assert_allclose(states, ep.gripper, atol=1e-6)
        assert np.abs(ep.action).max() <= 1.0


def test_value_map_peak_at_object_then_goal(dataset):
    for ep_index in range(EPISODES):
        ep = simulate_episode(ep_index, LENGTH, SEED)
        grasp = ep.grasp_step
        assert grasp is not None and 1 <= grasp < LENGTH - 1
        K, Rt = camera_matrices(0, ep.gripper[0], SIZE)
        for t, target in ((0, ep.object[0]), (grasp - 1, ep.object[grasp - 1]), (grasp, ep.goal)):
            item = dataset[ep_index * LENGTH + t]
            vmap = item[schema.value_map_key("head")]
            assert float(vmap.max()) > 0.85
            np.testing.assert_allclose(_pixel(vmap), project(target, K, Rt), atol=1.5)
        # Before the grasp the peak is not at the goal (and vice versa): they are far apart.
        assert np.linalg.norm(project(ep.object[0], K, Rt) - project(ep.goal, K, Rt)) > 5
        # The image shows the object where the value map points before the grasp.
        u, v = np.round(project(ep.object[0], K, Rt)).astype(int)
        rgb = dataset[ep_index * LENGTH][schema.image_key("head")][:, v, u].numpy() * 255
        np.testing.assert_allclose(rgb, ep.colour, atol=40)


def test_calibration_is_consistent(dataset):
    ep = simulate_episode(0, LENGTH, SEED)
    item = dataset[5]
    for cam_index, cam in enumerate(CAMERAS):
        K = item[schema.intrinsics_key(cam)].numpy().reshape(3, 3)
        Rt = item[schema.extrinsics_key(cam)].numpy().reshape(3, 4)
        np.testing.assert_allclose(Rt[:, :3] @ Rt[:, :3].T, np.eye(3), atol=1e-6)
        ref_K, ref_Rt = camera_matrices(cam_index, ep.gripper[5], SIZE)
        np.testing.assert_allclose(K, ref_K, atol=1e-4)
        np.testing.assert_allclose(Rt, ref_Rt, atol=1e-6)
    # The wrist camera is centred on the gripper, which shows white in the middle of its frame.
    centre = project(ep.gripper[5], K, Rt)
    np.testing.assert_allclose(centre, [(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2], atol=1e-4)
    c = SIZE[0] // 2
    assert float(item[schema.image_key("wrist")][:, c - 1 : c + 1, c - 1 : c + 1].min()) > 0.8


def test_delta_timestamps_load_past_and_future(built, dataset):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    fps = dataset.meta.fps
    deltas = {
        schema.image_key("head"): [-0.4, 0.0, 0.4],
        schema.value_map_key("head"): [0.0, 0.4],
        "action": [i / fps for i in range(5)],
    }
    windowed = LeRobotDataset(REPO_ID, root=built, delta_timestamps=deltas)
    i = 10
    item = windowed[i]
    assert item[schema.image_key("head")].shape == (3, 3, *SIZE)
    assert item[schema.value_map_key("head")].shape == (2, 3, *SIZE)
    assert item["action"].shape == (5, 2)
    assert not item[f"{schema.image_key('head')}_is_pad"].any()
    for k, offset in enumerate((-4, 0, 4)):
        torch.testing.assert_close(
            item[schema.image_key("head")][k],
            dataset[i + offset][schema.image_key("head")],
            atol=1e-6,
            rtol=0,
        )
    torch.testing.assert_close(item["action"], torch.stack([dataset[i + k]["action"] for k in range(5)]))
    # At the start of an episode the past frame is padded (a copy of the first frame).
    first = windowed[LENGTH]
    assert first[f"{schema.image_key('head')}_is_pad"].tolist() == [True, False, False]


def test_check_value_maps(tmp_path, dataset):
    schema.check_value_maps(dataset.meta.features, list(CAMERAS))
    bare = make_synthetic_dataset(
        tmp_path / "bare", repo_id="local/bare", num_episodes=1, episode_length=6, with_value_maps=False
    )
    assert not any(k.startswith(schema.VALUE_MAPS_PREFIX) for k in bare.meta.features)
    with pytest.raises(ValueError, match="no value maps"):
        schema.check_value_maps(bare.meta.features, ["head"])
    old = copy.deepcopy(dataset.meta.features)
    old[schema.value_map_key(CAMERAS[0])]["info"][schema.SCHEMA_INFO] = 1
    with pytest.raises(ValueError, match=r"schema \[1\].*lerobot-aim-annotate.*--source=contacts"):
        schema.check_value_maps(old, list(CAMERAS))


def test_images_without_videos_keep_schema_info(tmp_path):
    ds = make_synthetic_dataset(
        tmp_path / "img", repo_id="local/img", num_episodes=1, episode_length=6, use_videos=False
    )
    assert ds.meta.video_keys == []
    assert ds.meta.features[schema.value_map_key("head")]["dtype"] == "image"
    assert ds.meta.features[schema.value_map_key("head")]["info"]["aim.head_camera"] == "head"
    assert ds[0][schema.value_map_key("head")].shape == (3, *SIZE)


def test_deterministic_and_validated(tmp_path):
    a, b, c = (simulate_episode(1, LENGTH, s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.gripper, b.gripper)
    np.testing.assert_array_equal(a.action, b.action)
    assert not np.array_equal(a.gripper, c.gripper)
    with pytest.raises(ValueError, match="even"):
        make_synthetic_dataset(tmp_path / "odd", image_size=(31, 32))
