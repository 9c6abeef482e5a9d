"""RoboTwin 2.0 data: raw episodes (``tests/robotwin_helpers.py``) converted by ``lerobot_aim.data.robotwin``
into LeRobot's layout for the robotwin env, end-effector actions, value maps annotated from the recorded
poses, the annotator's errors; and forward kinematics, for real arms that record joint positions.
``tests/test_annotate.py`` covers the annotator's own options (YAML calibration, contact sheets,
overwrite, contacts source) on a RoboTwin-like dataset.
"""

import subprocess
import sys

import numpy as np
import pytest

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import robotwin, schema
from lerobot_aim.data.annotate import AnnotateConfig, AnnotationError, annotate_dataset
from tests.annotate_datasets import SCHEDULE, TASKS, expected_targets, look_at
from tests.robotwin_helpers import AIM_REPO, CAMERAS, HEAD_RT, ROOT, SRC_REPO, TASK, H, T, W, raw_episode

# ── Conversion and value maps ───────────────────────────────────────────


def test_converted_dataset_has_the_env_layout_and_calibration(robotwin_converted, robotwin_raw):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.envs import env_to_policy_features
    from lerobot.envs.configs import RoboTwinEnvConfig

    ds = LeRobotDataset(SRC_REPO, root=robotwin_converted)
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
        item["observation.state"].numpy(), robotwin_raw[0]["joint_action"]["vector"][3], atol=1e-6
    )
    np.testing.assert_allclose(
        item["action"].numpy(), robotwin_raw[0]["joint_action"]["vector"][4], atol=1e-6
    )
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


def test_value_maps_peak_where_the_known_points_project(robotwin_annotated):
    """Each arm's grasp point until its gripper closes, then its release point, in all three views."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out, summary = robotwin_annotated
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


def test_annotate_errors_name_what_to_provide(robotwin_converted, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from lerobot_aim.data.calibration import setup_cameras

    out = tmp_path / "never"
    with pytest.raises(AnnotationError) as error:  # no ee flags: the default feature is absent
        annotate_dataset(
            AnnotateConfig(
                repo_id=SRC_REPO, root=str(robotwin_converted), output_repo_id="x/y", output_root=str(out)
            )
        )
    message = str(error.value)
    for text in ("--ee_key", "--ee_slices", robotwin.ENDPOSE_KEY, "--fk_urdf", "--joint_slices"):
        assert text in message, (text, message)
    assert not out.exists()
    # A camera without calibration columns (e.g. LeRobot's robotwin_unified, which keeps no calibration).
    features = dict(LeRobotDatasetMetadata(SRC_REPO, root=robotwin_converted).features)
    features.pop(schema.intrinsics_key("head_camera"))
    cfg = AnnotateConfig(repo_id=SRC_REPO, output_repo_id="x/y")
    with pytest.raises(AnnotationError) as error:
        setup_cameras(cfg, features, list(CAMERAS))
    message = str(error.value)
    assert "['head_camera']" in message and schema.intrinsics_key("head_camera") in message
    assert "--calibration=calib.yaml" in message and "extrinsics:" in message


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
        sys.executable,
        "-m",
        "lerobot_aim.data.annotate",
        "--repo_id=local/arm",
        f"--root={src}",
        "--output_repo_id=local/arm_aim",
        f"--output_root={out}",
        "--source=poses",
        f"--fk_urdf=[{urdf}]",
        "--fk_frame=[tcp]",
        "--joint_slices=[[0,2]]",
        "--joint_units=deg",
        "--gripper_key=observation.state",
        "--gripper_indices=[2]",
        "--gripper_closed_is_low=true",
        f"--calibration={calib}",
    ]
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
