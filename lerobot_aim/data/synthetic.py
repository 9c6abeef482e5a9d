"""A tiny, learnable synthetic world written as a real LeRobotDataset (for tests and smoke training).

The world is the unit square ``[0, 1]^2`` seen from above: a coloured square (the *object*), a goal
marker (a green ring) and a white *gripper* dot. The 2-D action ``(dx, dy)`` in ``[-1, 1]`` moves the
gripper by ``action * STEP`` per step. A scripted expert first drives the gripper to the object; once
the gripper reaches it the object is *grasped* and moves with the gripper, which the expert then drives
to the goal (pick, then place). When the object reaches the goal it is released and the gripper stays.

Every camera renders the same scene through a fixed pinhole camera looking straight down at the table
(``z = 0``; the world frame has ``z`` pointing into the table so that ``R = I`` keeps image axes
aligned with world axes). The first camera is the *head* camera and sees the whole square; any other
camera is a *wrist* camera, zoomed ``WRIST_ZOOM`` times and centred on the gripper (its extrinsics
change every step). Rendering goes through the same ``K [R|t]`` that ``with_calibration`` records, so
the calibration columns are exact.

Each camera's value map (``observation.value_maps.<cam>``) is a Gaussian blob (peak 1.0, i.e. 255 as
uint8, grey replicated to 3 channels) at the next interaction region, in that camera's pixels: the
object before the grasp, the goal from the grasp on.

Use :func:`make_synthetic_dataset` to write it under ``root``; train on it offline with
``lerobot-train --dataset.repo_id=<repo_id> --dataset.root=<root> ...``. :func:`simulate_episode`
gives the ground truth (positions, grasp step) that tests check the written frames against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lerobot_aim.data import schema
from lerobot_aim.data.dataset_io import check_value_map_info, quiet_libav

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

STEP = 0.05  # world units the gripper moves per step at |action| = 1
REACH = 0.02  # the gripper has reached a target closer than this
OBJECT_HALF = 0.08  # half side of the object square (world units)
GOAL_RADIUS = 0.1  # radius of the goal ring (world units)
GRIPPER_RADIUS = 0.045  # radius of the gripper dot (world units)
VALUE_SIGMA = 0.07  # std of the value-map Gaussian (world units)
CAMERA_HEIGHT = 1.0  # distance from the cameras to the table
WRIST_ZOOM = 2.0  # wrist cameras see a 1/WRIST_ZOOM wide patch around the gripper

BACKGROUND = (60, 60, 70)
OUTSIDE = (0, 0, 0)  # beyond the table (visible from the wrist cameras)
GOAL_COLOUR = (40, 200, 60)
GRIPPER_COLOUR = (255, 255, 255)
OBJECT_COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 230)}
TASKS = tuple(f"move the {name} block to the goal" for name in OBJECT_COLOURS)


@dataclass
class Episode:
    """Ground truth of one scripted episode of ``T`` steps (world coordinates in ``[0, 1]``)."""

    task: str
    colour: tuple[int, int, int]
    goal: np.ndarray  # (2,)
    gripper: np.ndarray  # (T, 2), the observed gripper position at each step (= observation.state)
    object: np.ndarray  # (T, 2), the observed object position at each step
    grasped: np.ndarray  # (T,) bool, whether the object is held (or was placed) when step t is observed
    action: np.ndarray  # (T, 2), action taken at step t, in [-1, 1]

    @property
    def grasp_step(self) -> int | None:
        """First step at which the object is held, or None if the episode ends before the grasp."""
        hits = np.flatnonzero(self.grasped)
        return int(hits[0]) if len(hits) else None

    def interaction_target(self, t: int) -> np.ndarray:
        """The next interaction region at step ``t``: the object before the grasp, the goal after it."""
        return self.goal if self.grasped[t] else self.object[t]


def simulate_episode(episode_index: int, episode_length: int = 40, seed: int = 0) -> Episode:
    """Run the scripted expert for one episode; deterministic in ``(seed, episode_index)``."""
    rng = np.random.default_rng([seed, episode_index])
    colour_name = list(OBJECT_COLOURS)[episode_index % len(OBJECT_COLOURS)]
    margin = 0.15
    gripper = rng.uniform(margin, 1 - margin, size=2)
    # Object and goal well apart from each other and from the gripper's start.
    while True:
        obj, goal = rng.uniform(margin, 1 - margin, size=(2, 2))
        if np.linalg.norm(obj - goal) > 0.35 and np.linalg.norm(obj - gripper) > 0.2:
            break

    grippers, objects, grasped_flags, actions = [], [], [], []
    grasped = placed = False
    for _ in range(episode_length):
        grippers.append(gripper.copy())
        objects.append(obj.copy())
        grasped_flags.append(grasped or placed)
        target = gripper if placed else (goal if grasped else obj)
        action = np.clip((target - gripper) / STEP, -1.0, 1.0)
        actions.append(action)
        gripper = np.clip(gripper + action * STEP, 0.0, 1.0)
        if grasped:
            obj = gripper.copy()
        if not grasped and not placed and np.linalg.norm(gripper - obj) < REACH:
            grasped = True
            obj = gripper.copy()
        elif grasped and np.linalg.norm(obj - goal) < REACH:
            grasped, placed = False, True
    return Episode(
        task=f"move the {colour_name} block to the goal",
        colour=OBJECT_COLOURS[colour_name],
        goal=goal,
        gripper=np.asarray(grippers, dtype=np.float64),
        object=np.asarray(objects, dtype=np.float64),
        grasped=np.asarray(grasped_flags, dtype=bool),
        action=np.asarray(actions, dtype=np.float64),
    )


# ── Cameras ─────────────────────────────────────────────────────────────


def camera_matrices(
    camera_index: int, gripper: np.ndarray, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``K`` (3x3) and world-to-camera ``[R|t]`` (3x4, OpenCV convention) of a camera at one step.

    Camera 0 (head) is centred over the table and maps world ``[0, 1]`` to pixel ``[0, size - 1]``;
    the others (wrist) are centred over the gripper with ``WRIST_ZOOM`` times the focal length.
    """
    height, width = image_size
    zoom = 1.0 if camera_index == 0 else WRIST_ZOOM
    centre = np.array([0.5, 0.5]) if camera_index == 0 else np.asarray(gripper, dtype=np.float64)
    K = np.array(
        [
            [zoom * (width - 1) * CAMERA_HEIGHT, 0.0, (width - 1) / 2],
            [0.0, zoom * (height - 1) * CAMERA_HEIGHT, (height - 1) / 2],
            [0.0, 0.0, 1.0],
        ]
    )
    # Camera centre at (cx, cy, -h) in a world frame whose z points into the table; R = I.
    Rt = np.concatenate([np.eye(3), np.array([[-centre[0]], [-centre[1]], [CAMERA_HEIGHT]])], axis=1)
    return K, Rt


def project(points: np.ndarray, K: np.ndarray, Rt: np.ndarray) -> np.ndarray:
    """Pixel ``(u, v)`` of table points ``(..., 2)`` (world ``z = 0``)."""
    points = np.asarray(points, dtype=np.float64)
    world = np.concatenate([points, np.zeros_like(points[..., :1]), np.ones_like(points[..., :1])], -1)
    cam = world @ Rt.T
    pix = cam @ K.T
    return pix[..., :2] / pix[..., 2:3]


def _pixel_world_coords(K: np.ndarray, Rt: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """World ``(x, y)`` on the table seen by each pixel, ``(H, W, 2)`` (inverse of :func:`project`)."""
    height, width = image_size
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # camera coords with z = 1
    R, t = Rt[:, :3], Rt[:, 3]
    # Point on the ray at depth s: X = R^T (s * ray - t); choose s so that X_z = 0.
    centre = -R.T @ t
    dirs = rays @ R  # R^T applied to each ray
    s = -centre[2] / dirs[..., 2]
    return (centre + s[..., None] * dirs)[..., :2]


def render(ep: Episode, t: int, K: np.ndarray, Rt: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """RGB frame ``(H, W, 3)`` uint8 of step ``t`` seen by the camera ``K [R|t]``."""
    xy = _pixel_world_coords(K, Rt, image_size)
    img = np.empty((*image_size, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    outside = np.any((xy < 0) | (xy > 1), axis=-1)
    img[outside] = OUTSIDE
    d_goal = np.linalg.norm(xy - ep.goal, axis=-1)
    img[(d_goal <= GOAL_RADIUS) & (d_goal >= GOAL_RADIUS * 0.6)] = GOAL_COLOUR
    obj_mask = np.all(np.abs(xy - ep.object[t]) <= OBJECT_HALF, axis=-1)
    img[obj_mask] = ep.colour
    img[np.linalg.norm(xy - ep.gripper[t], axis=-1) <= GRIPPER_RADIUS] = GRIPPER_COLOUR
    return img


def render_value_map(
    ep: Episode, t: int, K: np.ndarray, Rt: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """Value map ``(H, W, 3)`` uint8 of step ``t``: a Gaussian (peak 255) at the next interaction region."""
    xy = _pixel_world_coords(K, Rt, image_size)
    d2 = np.sum((xy - ep.interaction_target(t)) ** 2, axis=-1)
    return schema.value_map_frame(np.exp(-0.5 * d2 / VALUE_SIGMA**2))


# ── Dataset ─────────────────────────────────────────────────────────────


def synthetic_features(
    cameras: tuple[str, ...] | list[str],
    image_size: tuple[int, int],
    use_videos: bool = True,
    with_calibration: bool = False,
    with_value_maps: bool = True,
) -> dict:
    """LeRobot features of the synthetic dataset (the schema's names; images/value maps as video)."""
    height, width = image_size
    cameras = list(cameras)
    visual_dtype = "video" if use_videos else "image"
    features: dict = {
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["dx", "dy"]},
    }
    for cam in cameras:
        features[schema.image_key(cam)] = {
            "dtype": visual_dtype,
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
        }
    if with_value_maps:
        for key, ft in schema.value_map_features(cameras, height, width).items():
            features[key] = {**ft, "dtype": visual_dtype}
    if with_calibration:
        features.update(schema.calibration_features(cameras))
    return features


def make_synthetic_dataset(
    root: Path,
    repo_id: str = "local/aim_synthetic",
    num_episodes: int = 4,
    episode_length: int = 40,
    cameras: tuple[str, ...] | list[str] = ("head",),
    image_size: tuple[int, int] = (32, 32),
    fps: int = 10,
    seed: int = 0,
    use_videos: bool = True,
    with_calibration: bool = False,
    with_value_maps: bool = True,
    vcodec: str = "h264",
) -> LeRobotDataset:
    """Write the synthetic world as a LeRobotDataset under ``root`` (must not exist) and reload it.

    ``cameras[0]`` is the head camera (full view), the others are wrist cameras (zoomed on the
    gripper). ``vcodec`` is the video codec of every video feature: ``"h264"`` (libx264, default,
    fast) or any codec LeRobot accepts (``"libsvtav1"`` is LeRobot's own default, slower). Returns
    ``LeRobotDataset(repo_id, root=root)`` read back from disk.
    """
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    cameras = list(cameras)
    if not cameras:
        raise ValueError("make_synthetic_dataset needs at least one camera")
    image_size = (int(image_size[0]), int(image_size[1]))
    if use_videos and (image_size[0] % 2 or image_size[1] % 2):
        raise ValueError(f"image_size {image_size} must be even with use_videos (yuv420p video)")
    features = synthetic_features(cameras, image_size, use_videos, with_calibration, with_value_maps)

    rgb_encoder = None
    if use_videos:
        # Tiny frames: libx264 "ultrafast" encodes 40 frames in milliseconds; crf 18 keeps the value
        # maps (training targets) close to their rendered values. GOP 2 (LeRobot's default) keeps
        # random access cheap for delta_timestamps decoding.
        preset = "ultrafast" if vcodec in ("h264", "hevc") else None
        rgb_encoder = RGBEncoderConfig(vcodec=vcodec, crf=18, g=2, preset=preset)

    with quiet_libav():
        dataset = LeRobotDataset.create(
            repo_id=repo_id,
            fps=fps,
            features=features,
            root=root,
            robot_type="aim_synthetic",
            use_videos=use_videos,
            rgb_encoder=rgb_encoder,
            encoder_threads=1,
        )
        for episode_index in range(num_episodes):
            ep = simulate_episode(episode_index, episode_length, seed)
            for t in range(episode_length):
                frame: dict = {
                    "observation.state": ep.gripper[t].astype(np.float32),
                    "action": ep.action[t].astype(np.float32),
                    "task": ep.task,
                }
                for cam_index, cam in enumerate(cameras):
                    K, Rt = camera_matrices(cam_index, ep.gripper[t], image_size)
                    frame[schema.image_key(cam)] = render(ep, t, K, Rt, image_size)
                    if with_value_maps:
                        frame[schema.value_map_key(cam)] = render_value_map(ep, t, K, Rt, image_size)
                    if with_calibration:
                        frame[schema.intrinsics_key(cam)] = K.reshape(9).astype(np.float32)
                        frame[schema.extrinsics_key(cam)] = Rt.reshape(12).astype(np.float32)
                dataset.add_frame(frame)
            # Encode in this process: LeRobot otherwise starts a process pool per episode when there is
            # more than one video key (always, here: images + value maps), which costs more than it saves.
            dataset.save_episode(parallel_encoding=False)
        dataset.finalize()

    check_value_map_info(root, features)
    return LeRobotDataset(repo_id, root=root)
