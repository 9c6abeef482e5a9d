"""RoboTwin 2.0 raw episodes (HDF5) -> a LeRobotDataset that ``lerobot-aim-annotate`` and ``lerobot-train`` read.

    python -m lerobot_aim.data.robotwin --raw_dir=<RoboTwin>/data/beat_block_hammer/demo_clean \\
        --repo_id=me/robotwin_beat_block_hammer [--root=<folder>] [--action_mode=joint|ee]

(flags: :class:`lerobot_aim.data.configs.RobotwinConvertConfig`).

RoboTwin's collector writes ``<raw_dir>/data/episode<i>.hdf5`` (and ``<raw_dir>/instructions/episode<i>.json``)
holding, for every step, what its ``get_obs()`` returns: per camera ``observation/<cam>/rgb`` (JPEG
bytes written by ``cv2.imencode``), ``intrinsic_cv`` (3x3) and ``extrinsic_cv`` (3x4, world to
camera, OpenCV axes); ``endpose/{left,right}_endpose`` (xyz + quaternion, world frame) and
``endpose/{left,right}_gripper`` (1 = open); ``joint_action/vector`` (14 = per arm 6 joints +
gripper). Reading the HDF5 files needs ``h5py`` (``pip install h5py``); :func:`convert_episodes`
itself takes any nested mapping of arrays in that layout.

The dataset written has LeRobot's RoboTwin names, so that ``lerobot-eval --env.type=robotwin`` feeds
a policy trained on it without renaming:

- ``observation.images.{head_camera,left_camera,right_camera}``: the camera frames (videos);
- ``observation.state`` (14): ``joint_action/vector``, what the env gives as ``agent_pos``;
- ``action``: the next step's ``joint_action/vector`` (14, ``--action_mode=joint``, RoboTwin's own
  convention), or (16, ``--action_mode=ee``) the next step's end-effector pose relative to the
  episode's first one, the delta that ``--env.action_mode=ee`` composes back onto the initial pose;
  the last recorded step has no next step and is dropped;
- ``observation.endpose`` (16): ``[left xyz, left quaternion, left gripper, right xyz, right
  quaternion, right gripper]`` as RoboTwin stores it;
- ``observation.camera.<cam>.intrinsics`` / ``.extrinsics``: the per-step calibration, so that
  ``lerobot-aim-annotate --calibration=dataset`` (the default) follows the moving wrist cameras;
- ``task``: the task name with spaces (what the env gives the policy at evaluation), or with
  ``--instruction=seen`` / ``unseen`` the episode's first instruction of that kind.
"""

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from lerobot.configs import parser

from lerobot_aim.cli import run_command
from lerobot_aim.data import schema
from lerobot_aim.data.configs import ROBOTWIN_CAMERAS, ROBOTWIN_COMMAND, RobotwinConvertConfig
from lerobot_aim.data.dataset_io import quiet_libav, resolve_root
from lerobot_aim.data.errors import ConvertError

logger = logging.getLogger(__name__)

CAMERAS = ROBOTWIN_CAMERAS
FPS = 25  # LeRobot's RoboTwinEnvConfig.fps
ARM_NAMES = [f"{arm}_{j}" for arm in ("left", "right") for j in [*(f"joint{i}" for i in range(6)), "gripper"]]
ENDPOSE_NAMES = [
    f"{arm}_{c}" for arm in ("left", "right") for c in ("x", "y", "z", "q0", "q1", "q2", "q3", "gripper")
]
ENDPOSE_KEY = "observation.endpose"
# lerobot-aim-annotate flags for a dataset written here (value maps from the recorded end-effector poses).
ANNOTATE_FLAGS = (
    "--source=poses",
    f"--ee_key={ENDPOSE_KEY}",
    "--ee_slices=[[0,3],[8,11]]",
    f"--gripper_key={ENDPOSE_KEY}",
    "--gripper_indices=[7,15]",
    "--gripper_closed_is_low=true",
)


def _array(node) -> np.ndarray:
    """The whole array of an h5py dataset or a numpy array."""
    return np.asarray(node[()])


def decode_jpeg(data) -> np.ndarray:
    """RoboTwin's stored ``rgb`` bytes -> (H, W, 3) uint8, channels as the simulator rendered them (RGB)."""
    import cv2

    buffer = np.frombuffer(bytes(data), dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # inverts cv2.imencode: the stored array's order
    if image is None:
        raise ValueError("An `rgb` entry is not a JPEG/PNG image.")
    return image


def endpose_vectors(episode: Mapping) -> np.ndarray:
    """(T, 16) ``[left pose (7), left gripper, right pose (7), right gripper]``."""
    end = episode["endpose"]
    parts = []
    for arm in ("left", "right"):
        parts += [_array(end[f"{arm}_endpose"]).reshape(-1, 7), _array(end[f"{arm}_gripper"]).reshape(-1, 1)]
    return np.concatenate(parts, axis=1).astype(np.float64)


def ee_delta_actions(endpose: np.ndarray) -> np.ndarray:
    """(T, 16) poses -> (T, 16) deltas from the first pose that LeRobot's RoboTwin env composes back.

    The env (``--env.action_mode=ee``) adds the translation to the initial pose's and composes the
    rotation as ``initial * delta`` (quaternions read scalar-last, as it does); the gripper is absolute.
    """
    from scipy.spatial.transform import Rotation

    out = endpose.copy()
    for start in (0, 8):
        init = endpose[0, start : start + 7]
        out[:, start : start + 3] = endpose[:, start : start + 3] - init[:3]
        delta = Rotation.from_quat(init[3:7]).inv() * Rotation.from_quat(endpose[:, start + 3 : start + 7])
        out[:, start + 3 : start + 7] = delta.as_quat()
    return out


def dataset_features(
    image_hw: dict[str, tuple[int, int]], action_mode: str = "joint", use_videos: bool = True
) -> dict:
    """LeRobot features of a converted RoboTwin dataset (cameras -> (height, width))."""
    features = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": list(ARM_NAMES)},
        "action": (
            {"dtype": "float32", "shape": (14,), "names": list(ARM_NAMES)}
            if action_mode == "joint"
            else {"dtype": "float32", "shape": (16,), "names": list(ENDPOSE_NAMES)}
        ),
        ENDPOSE_KEY: {"dtype": "float32", "shape": (16,), "names": list(ENDPOSE_NAMES)},
    }
    for cam, (height, width) in image_hw.items():
        features[schema.image_key(cam)] = {
            "dtype": "video" if use_videos else "image",
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
        }
    features.update(schema.calibration_features(list(image_hw)))
    return features


def episode_frames(
    episode: Mapping, task: str, cameras: tuple[str, ...] = CAMERAS, action_mode: str = "joint"
) -> Iterable[dict]:
    """The LeRobot frames of one raw episode (all but its last step)."""
    if action_mode not in ("joint", "ee"):
        raise ValueError(f"action_mode must be 'joint' or 'ee', got {action_mode!r}.")
    joints = _array(episode["joint_action"]["vector"]).reshape(-1, 14).astype(np.float64)
    endpose = endpose_vectors(episode)
    actions = joints if action_mode == "joint" else ee_delta_actions(endpose)
    observation = episode["observation"]
    missing = [cam for cam in cameras if cam not in observation]
    if missing:
        raise KeyError(f"The raw episode has no camera {missing} (it has {sorted(observation)}).")
    per_cam = {}
    for cam in cameras:
        node = observation[cam]
        intrinsics, extrinsics = _array(node["intrinsic_cv"]), _array(node["extrinsic_cv"])
        per_cam[cam] = (node["rgb"], intrinsics.reshape(-1, 9), extrinsics.reshape(-1, 12))
    num_steps = len(joints)
    for t in range(num_steps - 1):
        frame = {
            "observation.state": joints[t].astype(np.float32),
            "action": actions[t + 1].astype(np.float32),
            ENDPOSE_KEY: endpose[t].astype(np.float32),
            "task": task,
        }
        for cam, (rgb, intrinsics, extrinsics) in per_cam.items():
            frame[schema.image_key(cam)] = decode_jpeg(rgb[t])
            frame[schema.intrinsics_key(cam)] = intrinsics[t].astype(np.float32)
            frame[schema.extrinsics_key(cam)] = extrinsics[t].astype(np.float32)
        yield frame


def convert_episodes(
    episodes: Iterable[tuple[Mapping, str]],
    repo_id: str,
    root: str | Path,
    cameras: tuple[str, ...] = CAMERAS,
    action_mode: str = "joint",
    fps: int = FPS,
    vcodec: str = "h264",
    crf: int = 18,
    preset: str | None = "fast",
    image_writer_threads: int = 4,
):
    """Write ``(raw episode, task string)`` pairs as a LeRobotDataset at ``root``; returns the dataset."""
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = None
    with quiet_libav():
        for index, (episode, task) in enumerate(episodes):
            if dataset is None:
                image_hw = {
                    cam: decode_jpeg(episode["observation"][cam]["rgb"][0]).shape[:2] for cam in cameras
                }
                dataset = LeRobotDataset.create(
                    repo_id=repo_id,
                    fps=fps,
                    features=dataset_features(image_hw, action_mode),
                    root=root,
                    robot_type="aloha_agilex",
                    use_videos=True,
                    rgb_encoder=RGBEncoderConfig(vcodec=vcodec, crf=crf, g=2, preset=preset),
                    image_writer_threads=image_writer_threads,
                )
            for frame in episode_frames(episode, task, cameras, action_mode):
                dataset.add_frame(frame)
            dataset.save_episode(parallel_encoding=False)
            logger.info("Converted episode %d (%s)", index, task)
        if dataset is None:
            raise ValueError("No raw episode to convert.")
        dataset.finalize()
    return dataset


def episode_task(raw_dir: Path, index: int, task_name: str, instruction: str) -> str:
    """The task string of episode ``index``: the task name with spaces, or its first seen/unseen instruction."""
    if instruction == "task":
        return task_name.replace("_", " ")
    path = raw_dir / "instructions" / f"episode{index}.json"
    options = json.loads(path.read_text()).get(instruction) if path.is_file() else None
    if not options:
        raise FileNotFoundError(f"No {instruction!r} instruction for episode {index} in {path}.")
    return str(options[0])


@parser.wrap()
def convert(cfg: RobotwinConvertConfig) -> Path:
    """Convert RoboTwin's HDF5 episodes under ``cfg.raw_dir``; returns the dataset's folder."""
    try:
        import h5py
    except ImportError:
        raise ConvertError("Reading RoboTwin's HDF5 files needs h5py: pip install h5py") from None

    raw_dir = Path(cfg.raw_dir)
    files = sorted(
        (raw_dir / "data").glob("episode*.hdf5"), key=lambda p: int(p.stem.removeprefix("episode"))
    )
    if not files:
        raise ConvertError(
            f"No episode*.hdf5 under {raw_dir / 'data'}: --raw_dir is RoboTwin's data/<task>/<config>."
        )
    files = files[: cfg.max_episodes]
    task_name = cfg.task_name or raw_dir.resolve().parent.name
    root = resolve_root(cfg.root, cfg.repo_id)
    if root.exists():
        raise ConvertError(f"{root} already exists: choose another --root / --repo_id.")

    def episodes():
        for path in files:
            index = int(path.stem.removeprefix("episode"))
            with h5py.File(path, "r") as f:
                yield f, episode_task(raw_dir, index, task_name, cfg.instruction)

    convert_episodes(episodes(), cfg.repo_id, root, tuple(cfg.cameras), cfg.action_mode, vcodec=cfg.vcodec)
    print(f"Wrote {cfg.repo_id} at {root} ({len(files)} episodes). Value maps next:")
    print(
        f"  lerobot-aim-annotate --repo_id={cfg.repo_id} --root={root} --output_repo_id={cfg.repo_id}_aim \\"
    )
    print("      " + " ".join(f'"{flag}"' if "[" in flag else flag for flag in ANNOTATE_FLAGS))
    return root


def main() -> None:
    """Console entry point (``python -m lerobot_aim.data.robotwin``)."""
    from lerobot.utils.utils import init_logging

    init_logging()
    run_command(convert, ROBOTWIN_COMMAND)


if __name__ == "__main__":
    main()
