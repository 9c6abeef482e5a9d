"""Stage II rewards: the dense value-map reward read at the projected end effector, returns, advantages."""

import numpy as np
import pytest
import torch

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.asvm.packing import pack_tpose
from lerobot_aim.rl.rewards import (
    EnvGeometry,
    bilinear_sample,
    dense_reward,
    env_info_at,
    episode_returns,
    group_advantages,
    read_env_geometry,
    step_rewards,
    value_frame_index,
)


def _top_down_camera(size: int) -> CameraCalibration:
    """Looks straight down at the z = 0 plane from 2 m: world x in [-1, 1] spans the image width."""
    c = (size - 1) / 2
    intrinsics = np.array([[2 * c, 0, c], [0, 2 * c, c], [0, 0, 1.0]])
    extrinsics = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2]])
    return CameraCalibration(intrinsics, extrinsics, size, size)


def _blob(hw, center_uv, sigma=1.5) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(hw[0]).float(), torch.arange(hw[1]).float(), indexing="ij")
    grey = torch.exp(-((u - center_uv[0]) ** 2 + (v - center_uv[1]) ** 2) / (2 * sigma**2))
    return grey.expand(3, *hw).clone()


def test_bilinear_sample_interpolates_and_is_zero_outside():
    grid = torch.arange(12.0).reshape(3, 4)
    uv = torch.tensor([[1.0, 1.0], [1.5, 1.0], [1.5, 1.5], [-3.0, 0.0], [0.0, 7.0]])
    values = bilinear_sample(grid, uv)
    assert values.tolist() == pytest.approx([5.0, 5.5, 7.5, 0.0, 0.0])
    assert bilinear_sample(grid.expand(3, 3, 4), uv[:1]).item() == pytest.approx(5.0)  # channels averaged


def test_dense_reward_reads_the_map_at_the_projected_end_effector():
    camera = _top_down_camera(64)  # the env renders 64x64, the policy packs the head at 32x32
    target = np.array([0.4, -0.2, 0.0])
    uv, _ = camera.project(target[None])
    head_uv = (uv[0] + 0.5) * 0.5 - 0.5
    canvas = _blob((32, 32), head_uv)
    on = dense_reward(canvas, EnvGeometry(target, {"head": camera}), ["head"], (32, 32))
    near = dense_reward(canvas, EnvGeometry(target + [0.05, 0, 0], {"head": camera}), ["head"], (32, 32))
    far = dense_reward(canvas, EnvGeometry(np.array([-0.8, 0.8, 0]), {"head": camera}), ["head"], (32, 32))
    assert on > 0.9 and 0.2 < near < on
    assert far < 1e-3
    assert dense_reward(canvas, None, ["head"], (32, 32)) == 0.0
    behind = EnvGeometry(np.array([0.0, 0.0, 3.0]), {"head": camera})  # above the camera
    assert dense_reward(canvas, behind, ["head"], (32, 32)) == 0.0
    # A ramp in u and v is interpolated exactly: the reading is the projected pixel, resized to the canvas.
    ramp = torch.arange(32.0)[None, :] / 31 + torch.arange(32.0)[:, None] / 310
    expected = head_uv[0] / 31 + head_uv[1] / 310
    assert dense_reward(ramp, EnvGeometry(target, {"head": camera}), ["head"], (32, 32)) == pytest.approx(
        expected, abs=1e-5
    )


def test_wrist_views_count_with_max_and_not_with_head():
    head, wrist = _top_down_camera(32), _top_down_camera(40)
    target = np.array([-0.3, 0.5, 0.0])
    uv, _ = wrist.project(target[None])
    quarter_uv = (uv[0] + 0.5) * (16 / 40) - 0.5
    canvas = pack_tpose([torch.zeros(3, 32, 32), _blob((16, 16), quarter_uv, sigma=1.0)])
    geometry = EnvGeometry(target, {"head": head, "wrist": wrist})
    cameras = ["head", "wrist"]
    on_wrist = dense_reward(canvas, geometry, cameras, (32, 32), views="max")
    assert on_wrist == pytest.approx(
        bilinear_sample(canvas, torch.tensor(quarter_uv + [0.0, 32.0])[None]).item()
    )
    assert on_wrist > 0.8
    assert dense_reward(canvas, geometry, cameras, (32, 32), views="head") == 0.0
    # A renamed camera: the policy's "wrist" is the env's "gripper_cam".
    renamed = EnvGeometry(target, {"head": head, "gripper_cam": wrist})
    assert (
        dense_reward(canvas, renamed, cameras, (32, 32), camera_sources={"wrist": "gripper_cam"}) == on_wrist
    )
    with pytest.raises(ValueError, match="views"):
        dense_reward(canvas, geometry, cameras, (32, 32), views="mean")


def test_geometry_adapter_reads_the_flat_calibration_layouts():
    camera = _top_down_camera(32)
    k, rt = camera.to_flat()
    nested = {
        "ee_pos": [0.1, 0.2, 0.0],
        "calibration": {"head": {"intrinsics": k, "extrinsics": rt, "flip": True}},
    }
    geometry = read_env_geometry(nested, {"head": (32, 32)})
    assert np.allclose(geometry.ee_pos, [0.1, 0.2, 0.0])
    assert geometry.cameras["head"].flip_u and geometry.cameras["head"].flip_v
    assert np.allclose(geometry.cameras["head"].intrinsics, camera.intrinsics, atol=1e-5)
    per_key = {"tcp_pos": np.zeros(3), "intrinsics": {"head": k}, "extrinsics": {"head": rt}}
    assert read_env_geometry(per_key, {"head": (32, 32)}).cameras["head"].width == 32
    sized = {
        "ee_pos": np.zeros(3),
        "cameras": {"head": {"intrinsics": k, "extrinsics": rt, "width": 32, "height": 24}},
    }
    assert read_env_geometry(sized).cameras["head"].height == 24
    assert (
        read_env_geometry({"calibration": nested["calibration"]}, {"head": (32, 32)}) is None
    )  # no end effector
    assert read_env_geometry({"ee_pos": np.zeros(3)}) is None  # no calibration
    assert (
        read_env_geometry({"ee_pos": np.zeros(3), "calibration": nested["calibration"]}) is None
    )  # no image size


def test_vector_env_info_is_split_per_env_with_final_info_for_ended_episodes():
    info = {
        "ee_pos": np.array([[0.0, 0, 0], [1, 1, 1]]),
        "_ee_pos": np.array([True, True]),
        "calibration": {"head": {"intrinsics": np.ones((2, 9)), "_intrinsics": np.array([True, True])}},
        "final_info": {"ee_pos": np.array([[9.0, 9, 9], [0, 0, 0]]), "_ee_pos": np.array([True, False])},
        "_final_info": np.array([True, False]),
    }
    assert env_info_at(info, 0)["ee_pos"].tolist() == [9, 9, 9]  # its episode ended: the last step's info
    second = env_info_at(info, 1)
    assert second["ee_pos"].tolist() == [1, 1, 1] and second["calibration"]["head"]["intrinsics"].shape == (
        9,
    )


def test_value_frame_index_reads_the_frame_of_the_state_the_action_leads_to():
    # decoded frame i shows step t + (i + 1) * frame_stride; action j leads to step t + j + 1
    assert [value_frame_index(j, 4, 2) for j in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]  # tiny: stride 4
    assert [value_frame_index(j, 1, 8) for j in range(8)] == list(range(8))  # Wan VAE: a frame per step
    assert value_frame_index(20, 1, 8) == 7


def test_returns_and_group_advantages():
    dense = torch.tensor([[0.5, 1.0, 0.0], [0.2, 0.2, 0.2]])
    success = torch.tensor([[False, True, False], [False, False, False]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    assert step_rewards(dense, success, 0.5, 1.0)[0].tolist() == pytest.approx([0.25, 1.5, 0.0])
    mean = episode_returns(dense, success, valid, lambda_d=0.5, lambda_s=1.0)
    assert mean.tolist() == pytest.approx([0.5 * 0.75 + 1.0, 0.5 * 0.2])
    total = episode_returns(dense, success, valid, lambda_d=0.5, lambda_s=1.0, dense_aggregation="sum")
    assert total.tolist() == pytest.approx([0.5 * 1.5 + 1.0, 0.5 * 0.6])

    returns = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, 0.0, 0.0, 1.0])
    adv = group_advantages(returns, group_size=2, eps=0.0 + 1e-8).reshape(4, 2)
    assert adv[0].tolist() == pytest.approx([-1.0, 1.0])
    assert adv[1].tolist() == [0.0, 0.0] and adv[2].tolist() == [0.0, 0.0]  # equal returns: no signal
    assert adv.sum(-1).abs().max() < 1e-6
    with pytest.raises(ValueError, match="groups"):
        group_advantages(torch.zeros(5), group_size=2)
