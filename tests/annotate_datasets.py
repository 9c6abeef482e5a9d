"""A RoboTwin-like LeRobotDataset with a known world, for the tests of lerobot-aim-annotate.

Two arms whose grippers close on known 3-D points and open at known release points, a fixed head
camera (calibrated by a YAML file, or per-step columns with ``head_columns``) and two wrist cameras
that move with the arms (per-step calibration columns); state = ``[xyz, quat, gripper]`` per arm (16),
gripper 1 = open as RoboTwin has it. Built in LeRobot's real format.
"""

import hashlib
from pathlib import Path

import numpy as np

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import schema

H, W = 48, 64
T = 30
FPS = 10
CAMERAS = ("head", "left_camera", "right_camera")
# Per episode and arm: (close step, open step, grasp point, release point); arm 0 = left, 1 = right.
SCHEDULE = [
    [
        (8, 18, (-0.15, 0.10, 0.02), (-0.20, -0.12, 0.05)),
        (12, 24, (0.18, 0.08, 0.02), (0.10, -0.15, 0.05)),
    ],
    [
        (10, 20, (-0.10, 0.12, 0.03), (-0.22, -0.05, 0.04)),
        (6, 16, (0.15, 0.12, 0.02), (0.22, -0.10, 0.05)),
    ],
]
STARTS = [(-0.25, -0.20, 0.25), (0.25, -0.20, 0.25)]
TASKS = ["put both blocks on the pads", "swap the blocks"]
HEAD_K = np.array([[60.0, 0.0, (W - 1) / 2], [0.0, 60.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
WRIST_K = np.array([[40.0, 0.0, (W - 1) / 2], [0.0, 40.0, (H - 1) / 2], [0.0, 0.0, 1.0]])


def look_at(position, target) -> np.ndarray:
    """World-to-camera [R|t] (OpenCV: x right, y down, z forward) of a camera at ``position``."""
    position, target = np.asarray(position, float), np.asarray(target, float)
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, (-rotation @ position)[:, None]], axis=1)


HEAD_RT = look_at((0.0, -0.55, 0.75), (0.0, 0.0, 0.05))


def wrist_rt(ee) -> np.ndarray:
    ee = np.asarray(ee, float)
    return look_at(ee + (0.0, -0.1, 0.3), ee + (0.0, 0.1, -0.3))


def trajectory(close, open_, grasp, release, start) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3) tool-centre positions and (T,) gripper value (1 open, 0 closed: RoboTwin's convention)."""
    start, grasp, release = (np.asarray(p, float) for p in (start, grasp, release))
    ee = np.empty((T, 3))
    for t in range(T):
        if t <= close:
            ee[t] = start + (grasp - start) * t / close
        elif t <= open_:
            ee[t] = grasp + (release - grasp) * (t - close) / (open_ - close)
        else:
            ee[t] = release + np.array([0.0, 0.0, 0.15]) * (t - open_) / (T - 1 - open_)
    gripper = np.where((np.arange(T) >= close) & (np.arange(T) < open_), 0.0, 1.0)
    return ee, gripper


def expected_targets(episode: int, t: int) -> list[np.ndarray]:
    """Each arm's next interaction point at step t: grasp point up to the close step, then release."""
    return [
        np.asarray(grasp if t <= close else release, float) for close, _, grasp, release in SCHEDULE[episode]
    ]


def render(calib: CameraCalibration, points: list[tuple[np.ndarray, tuple]], half: int = 1) -> np.ndarray:
    """A grey (calib.height, calib.width) image with a square of ``2 half + 1`` pixels of each colour
    where its 3D point projects (points behind the camera or outside the image are not drawn)."""
    img = np.full((calib.height, calib.width, 3), (70, 70, 80), dtype=np.uint8)
    for point, colour in points:
        uv, depth = calib.project(np.asarray(point, float)[None])
        if depth[0] > 0 and calib.in_image(uv)[0]:
            u, v = np.round(uv[0]).astype(int)
            img[max(v - half, 0) : v + half + 1, max(u - half, 0) : u + half + 1] = colour
    return img


def quiet_create(root, repo_id, features, use_videos=True, robot_type="aloha_agilex"):
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    encoder = RGBEncoderConfig(vcodec="h264", crf=18, g=2, preset="ultrafast") if use_videos else None
    return LeRobotDataset.create(
        repo_id=repo_id,
        fps=FPS,
        features=features,
        root=root,
        robot_type=robot_type,
        use_videos=use_videos,
        rgb_encoder=encoder,
    )


def build_robotwin_like(root: Path, head_columns: bool = False) -> Path:
    """Two arms, head + two wrist cameras; state = [xyz, quat, gripper] per arm (16), RoboTwin-like."""
    from lerobot_aim.data.dataset_io import quiet_libav

    features = {
        "observation.state": {"dtype": "float32", "shape": (16,), "names": None},
        "action": {"dtype": "float32", "shape": (16,), "names": None},
    }
    for cam in CAMERAS:
        features[schema.image_key(cam)] = {
            "dtype": "video",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        }
    features.update(schema.calibration_features([c for c in CAMERAS if head_columns or c != "head"]))
    with quiet_libav():
        ds = quiet_create(root, "local/robotwin_like", features)
        for episode, arms in enumerate(SCHEDULE):
            traj = [trajectory(*arm, STARTS[a]) for a, arm in enumerate(arms)]
            for t in range(T):
                state = np.concatenate(
                    [np.concatenate([traj[a][0][t], [0.0, 0.0, 0.0, 1.0], [traj[a][1][t]]]) for a in range(2)]
                ).astype(np.float32)
                scene = [(arm[2], (220, 40, 40)) for arm in arms] + [(arm[3], (40, 200, 60)) for arm in arms]
                scene += [(traj[a][0][t], (255, 255, 255)) for a in range(2)]
                frame = {"observation.state": state, "action": state.copy(), "task": TASKS[episode]}
                for cam in CAMERAS:
                    K, Rt = (
                        (HEAD_K, HEAD_RT)
                        if cam == "head"
                        else (WRIST_K, wrist_rt(traj[CAMERAS.index(cam) - 1][0][t]))
                    )
                    calib = CameraCalibration(K, Rt, W, H)
                    frame[schema.image_key(cam)] = render(calib, scene)
                    if cam != "head" or head_columns:
                        frame[schema.intrinsics_key(cam)], frame[schema.extrinsics_key(cam)] = calib.to_flat()
                ds.add_frame(frame)
            ds.save_episode(parallel_encoding=False)
        ds.finalize()
    return root


def write_head_yaml(path: Path) -> Path:
    path.write_text(
        "cameras:\n"
        "  head:\n"
        f"    K: {HEAD_K.tolist()}\n"
        f"    extrinsics: {np.vstack([HEAD_RT, [0, 0, 0, 1]]).tolist()}\n"
        f"    width: {W}\n    height: {H}\n"
    )
    return path


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


POSES_FLAGS = dict(
    source="poses",
    ee_key="observation.state",
    ee_slices=[[0, 3], [8, 11]],
    gripper_key="observation.state",
    gripper_indices=[7, 15],
    gripper_closed_is_low=True,
)
