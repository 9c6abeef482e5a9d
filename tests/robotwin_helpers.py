"""Shared pieces of the RoboTwin tests (``tests/test_robotwin_*.py``): RoboTwin's raw episodes and the
datasets made from them.

RoboTwin itself (SAPIEN, CuRobo, a GPU) does not run here. Its raw episodes are built in its HDF5
layout (as nested arrays: JPEG ``rgb``, ``intrinsic_cv`` / ``extrinsic_cv`` per camera, ``endpose``,
``joint_action``) with the known world of ``tests/test_annotate.py`` (two arms closing and opening
their grippers on known 3-D points), converted by ``lerobot_aim.data.robotwin`` and annotated from the
recorded end-effector poses. ``tests/conftest.py`` registers this module as a plugin, so that one
conversion and one annotation (the ``robotwin_*`` fixtures) serve every RoboTwin test module.
"""

from pathlib import Path

import numpy as np
import pytest

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import robotwin
from tests.annotate_datasets import SCHEDULE, STARTS, TASKS, look_at, render, trajectory, wrist_rt

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
            observation[cam]["rgb"].append(cv2.imencode(".jpg", render(calib, scene, half=3))[1].tobytes())
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


@pytest.fixture(scope="session")
def robotwin_raw():
    return [raw_episode(e) for e in range(len(SCHEDULE))]


@pytest.fixture(scope="session")
def robotwin_converted(robotwin_raw, tmp_path_factory):
    root = tmp_path_factory.mktemp("robotwin") / "src"
    robotwin.convert_episodes(
        ((ep, TASKS[i]) for i, ep in enumerate(robotwin_raw)), SRC_REPO, root, preset="ultrafast"
    )
    return root


@pytest.fixture(scope="session")
def robotwin_annotated(robotwin_converted, tmp_path_factory):
    import draccus

    from lerobot_aim.data.annotate import AnnotateConfig, annotate_dataset

    out = tmp_path_factory.mktemp("robotwin_aim") / "aim"
    # The flags the converter prints, parsed as lerobot-aim-annotate parses its command line.
    args = [
        f"--repo_id={SRC_REPO}",
        f"--root={robotwin_converted}",
        f"--output_repo_id={AIM_REPO}",
        f"--output_root={out}",
    ]
    summary = annotate_dataset(draccus.parse(AnnotateConfig, args=[*args, *robotwin.ANNOTATE_FLAGS]))
    return out, summary
