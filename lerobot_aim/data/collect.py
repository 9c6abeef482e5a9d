"""``lerobot-aim-collect``: scripted MetaWorld demonstrations written as a value-map LeRobotDataset.

Runs MetaWorld's scripted experts (``metaworld.policies``) through the ``aim_metaworld`` env
(:class:`lerobot_aim.envs.AIMMetaWorldEnv`: a head and two hand-mounted cameras, per-step calibration
and contact signals) and writes, per step, everything AIM trains on (:mod:`lerobot_aim.data.schema`):

- ``observation.images.<cam>``: the camera frames (videos), the head camera first;
- ``observation.value_maps.<cam>``: the value map of each camera (videos, grey in 3 channels);
- ``observation.state`` (hand xyz, finger opening) and ``action`` (the executed, clipped action);
- ``observation.camera.<cam>.intrinsics`` / ``.extrinsics``: that step's calibration (the wrist
  cameras move) of the image as stored (the head camera's 180-degree rotation folded in);
- the raw annotation signals (``observation.ee_position``, ``observation.gripper_closed``,
  ``annotation.pad_contact``, ``annotation.object_position``, ``annotation.contact_points``,
  ``annotation.support_points``), so that ``lerobot-aim-annotate --source=contacts`` can re-render
  the maps later (another ``--radius``, other thresholds) without the simulator;
- the task string: LeRobot's ``TASK_DESCRIPTIONS`` wording (e.g. "Press a button").

Value maps show the NEXT interaction region, so they need the future of the episode: each episode is
simulated and buffered whole, its events are found once it has ended, and only then are its frames
added and the episode saved. Events follow the design (``DESIGN.md``, "Value maps (ASVM)") and
``lerobot-aim-annotate --source=contacts``: a grasp at the first step the gripper is closing with both
fingers on the object (region: the gripper-object contact points), a placement once the released
object's centre of mass has stayed slower than ``--speed_threshold`` for ``--settle_steps`` steps
(region: the object-support contact points), and for tasks without a grasp the first gripper-object
contact. Each step's region is projected with that step's calibration and drawn as a Gaussian of
world radius ``--radius`` (:func:`lerobot_aim.asvm.render.render_value_map`).

MetaWorld's experts never let go of what they carry: they hold it at the goal (which, for
pick-place, is a point in the air). For the pick-and-place tasks of :data:`PLACE_TASKS` the collector
therefore appends a scripted placement once the task has succeeded (``--place_after_success``): it
lowers the held object until it touches a support, opens the gripper, lifts the hand and records
until the object has come to rest, which gives the episode its place event. Those frames come after
the success, which LeRobot's MetaWorld evaluation never reaches (episodes end at the first success).

Example::

    lerobot-aim-collect --repo_id=me/aim_metaworld_easy --task=easy --num_episodes=50 \\
        --image_size=128 --root=data/aim_metaworld_easy

Each episode is saved into a staged copy of the dataset and published by renaming it into place
(:mod:`lerobot_aim.data.publish`): whatever ends the run (an error, Ctrl-C, SIGTERM, SIGKILL, power
loss), the folder at ``--root`` holds a whole dataset with every episode saved before; only the
episode in progress is lost. ``--resume=true`` (default) appends to an existing dataset at ``--root``
(after removing what a killed run left next to it, and refusing a dataset that is not whole), skipping
the seeds already used: rerun the same command after a crash to add the episodes still missing (with
``--num_episodes`` set to how many more to add per task). Seeds, outcomes and events of every episode
are logged in ``meta/aim_collect.json``, published with the episode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.asvm.events import (
    SETTLE_SPEED,
    SETTLE_STEPS,
    InteractionEvent,
    detect_contact_events,
    next_interaction_targets,
)
from lerobot_aim.asvm.render import render_value_map
from lerobot_aim.data import schema
from lerobot_aim.data.integrity import dataset_problems, is_lerobot_dataset
from lerobot_aim.data.publish import clean_staging, staged_update
from lerobot_aim.data.synthetic import check_value_map_info, quiet_libav
from lerobot_aim.envs.configuration import ACTION_DIM, DEFAULT_CAMERAS, STATE_DIM, parse_cameras

if TYPE_CHECKING:
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_aim.envs.metaworld_env import AIMMetaWorldEnv

logger = logging.getLogger(__name__)

COLLECT_COMMAND = "lerobot-aim-collect"
# Collection log next to LeRobot's metadata: settings, seeds, outcomes and events of every episode.
COLLECT_LOG = "meta/aim_collect.json"
COLLECT_LOG_VERSION = 1
COLLECT_STAGING = "aim-collect"  # staging folders: .<root name>.aim-collect-<id>.tmp
ROBOT_TYPE = "sawyer"
FPS = 80  # MetaWorld's control rate (5 physics steps of 2.5 ms), as LeRobot's MetaWorld datasets
# Tasks whose goal is to carry an object somewhere and leave it there: after the expert's success the
# collector lowers the object onto its support and releases it, which gives the place event.
PLACE_TASKS = frozenset(
    {
        "assembly-v3",
        "bin-picking-v3",
        "box-close-v3",
        "pick-place-v3",
        "pick-place-wall-v3",
        "shelf-place-v3",
    }
)
PLACE_MODES = ("auto", "always", "never")
AFTER_LAST = ("last", "empty")
# Scripted placement: hand speed (fraction of MetaWorld's 1 cm per step) and step limits.
PLACE_LOWER_SPEED = 0.5
PLACE_MAX_LOWER_STEPS = 60
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper_opening"]
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]


class CollectError(ValueError):
    """A problem with the command's inputs, with what to do about it."""


@dataclass
class CollectConfig:
    # Repo id of the dataset written (also its name on the Hub with --push_to_hub=true).
    repo_id: str = "local/aim_metaworld"
    # Folder of the dataset (default: $HF_LEROBOT_HOME/<repo_id>).
    root: str | None = None
    # MetaWorld MT50 task(s): a task ("pick-place-v3"), a difficulty group (easy, medium, hard,
    # very_hard) or a comma-separated list of both, as --env.task of `--env.type=aim_metaworld`.
    task: str = "pick-place-v3"
    # Episodes to add per task. With --keep_failed=false, failed attempts are dropped and retried with
    # the next seed (at most --max_attempts attempts per task).
    num_episodes: int = 10
    # First seed of each task; attempt k of a task uses the k-th seed from here not used before in
    # the dataset (seeds set the object and goal positions).
    seed: int = 0
    # Height and width of every camera's images and value maps (even: yuv420p video).
    image_size: int = 128
    # "name:mujoco_camera" pairs, comma-separated; the first is the head camera.
    cameras: str = DEFAULT_CAMERAS
    # World radius of an interaction point, metres: the Gaussian's sigma is focal * radius / depth px.
    radius: float = 0.03
    # Steps the expert gets to succeed (MetaWorld's own limit is 500).
    max_steps: int = 500
    # Keep episodes where the expert failed within --max_steps (default: drop and log them).
    keep_failed: bool = False
    # Attempts per task at most (default: 2 x num_episodes + 2; failures are retried with new seeds).
    max_attempts: int | None = None
    # Steps recorded once the task is done: after the success, or after the placement has settled.
    steps_after_success: int = 10
    # Scripted placement after success (lower, release, wait until the object rests): "auto" (the
    # pick-and-place tasks of PLACE_TASKS), "always" (any task whose object is held at success), "never".
    place_after_success: str = "auto"
    # Steps the scripted placement may take at most (lowering, release and settling).
    max_place_steps: int = 120
    # Place event: centre-of-mass speed (m/s) below which a released object counts as still
    # (MetaWorld's puck creeps at about 0.025 m/s once put down). `lerobot-aim-annotate
    # --source=contacts` has the same default: pass it the same value to reproduce the maps.
    speed_threshold: float = SETTLE_SPEED
    # Place event: consecutive still steps that confirm a placement.
    settle_steps: int = SETTLE_STEPS
    # After the last event: "last" keeps showing its region, "empty" gives blank maps.
    after_last: str = "last"
    # Video codec of the images and value maps (h264, hevc, libsvtav1, ...).
    vcodec: str = "h264"
    # Video quality (lower is better and larger); value maps are training targets: keep it low.
    crf: int = 18
    # Encoder speed preset (codec-specific; None: the codec's default).
    preset: str | None = "fast"
    # Append to an existing dataset at --root (refuse to touch it with --resume=false).
    resume: bool = True
    # Push the dataset to the Hub as --repo_id when done.
    push_to_hub: bool = False
    # Make the pushed dataset private.
    private: bool = False

    def __post_init__(self) -> None:
        from lerobot_aim.envs.metaworld_env import resolve_tasks

        try:
            resolve_tasks(self.task)
            parse_cameras(self.cameras)
        except ValueError as error:
            raise CollectError(str(error)) from None
        if self.num_episodes < 0:
            raise CollectError(f"--num_episodes must be >= 0, got {self.num_episodes}.")
        if self.image_size <= 0 or self.image_size % 2:
            raise CollectError(f"--image_size must be a positive even number (video), got {self.image_size}.")
        if self.radius <= 0:
            raise CollectError(f"--radius must be > 0 (metres), got {self.radius}.")
        if self.max_steps < 1 or self.steps_after_success < 0 or self.max_place_steps < 1:
            raise CollectError("--max_steps and --max_place_steps must be >= 1, --steps_after_success >= 0.")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise CollectError(f"--max_attempts must be >= 1, got {self.max_attempts}.")
        if self.place_after_success not in PLACE_MODES:
            raise CollectError(
                f"--place_after_success must be one of {PLACE_MODES}, got {self.place_after_success!r}."
            )
        if self.after_last not in AFTER_LAST:
            raise CollectError(f"--after_last must be one of {AFTER_LAST}, got {self.after_last!r}.")
        if self.speed_threshold <= 0 or self.settle_steps < 1:
            raise CollectError("--speed_threshold must be > 0 and --settle_steps >= 1.")

    @property
    def tasks(self) -> list[str]:
        """Task names in order, each once."""
        from lerobot_aim.envs.metaworld_env import resolve_tasks

        names: list[str] = []
        for group in resolve_tasks(self.task).values():
            names += [t for t in group if t not in names]
        return names

    @property
    def attempts_per_task(self) -> int:
        if self.keep_failed:
            return self.num_episodes
        return self.max_attempts if self.max_attempts is not None else 2 * self.num_episodes + 2

    def places(self, task: str) -> bool:
        """Whether a held object is put down after the success of ``task``."""
        mode = self.place_after_success
        return mode == "always" or (mode == "auto" and task in PLACE_TASKS)

    def map_settings(self) -> dict[str, Any]:
        """The settings that decide the value maps (must not change within a dataset)."""
        return {
            "radius": self.radius,
            "speed_threshold": self.speed_threshold,
            "settle_steps": self.settle_steps,
            "after_last": self.after_last,
            "object_half_height": 0.0,
        }


# ── Dataset features ────────────────────────────────────────────────────


def collect_features(cameras: list[tuple[str, str]], height: int, width: int) -> dict:
    """LeRobot features of a collected dataset: images, value maps, calibration, state, action, signals.

    ``cameras``: ``(name, mujoco_camera)`` pairs, head first (see :func:`parse_cameras`).
    """
    from lerobot_aim.envs.metaworld_env import MAX_CONTACT_POINTS

    names = [name for name, _ in cameras]
    features: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": list(STATE_NAMES)},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": list(ACTION_NAMES)},
    }
    for name in names:
        features[schema.image_key(name)] = {
            "dtype": "video",
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
        }
    features.update(schema.value_map_features(names, height, width, head_camera=names[0]))
    features.update(schema.calibration_features(names))
    features.update(
        schema.annotation_signal_features(
            n_arms=1, pads_per_arm=2, max_contact_points=MAX_CONTACT_POINTS, with_ee_position=True
        )
    )
    return features


def _signals_of(info: dict) -> dict[str, np.ndarray]:
    """The raw annotation signals of one step, as the dataset stores them (float32)."""
    contact = info["contact"]
    return {
        schema.EE_POSITION: np.asarray(info["ee_pos"], dtype=np.float32),
        schema.GRIPPER_CLOSED: np.array([1.0 if info["gripper_command"] > 0 else 0.0], dtype=np.float32),
        schema.PAD_CONTACT: np.asarray(contact["pad_contacts"], dtype=np.float32),
        schema.OBJECT_POSITION: np.asarray(info["object_com"], dtype=np.float32),
        schema.CONTACT_POINTS: np.asarray(contact["points"], dtype=np.float32).reshape(-1),
        schema.SUPPORT_POINTS: np.asarray(contact["support_points"], dtype=np.float32).reshape(-1),
    }


# ── Events ──────────────────────────────────────────────────────────────


def _finite_points(flat: np.ndarray) -> np.ndarray:
    """(K, 3) points of a NaN-padded flat vector, padding removed."""
    points = np.asarray(flat, dtype=np.float64).reshape(-1, 3)
    return points[np.isfinite(points).all(axis=1)]


def episode_events(
    signals: dict[str, np.ndarray],
    fps: float,
    speed_threshold: float = SETTLE_SPEED,
    settle_steps: int = SETTLE_STEPS,
    object_half_height: float = 0.0,
) -> list[InteractionEvent]:
    """Interaction events of one single-arm episode from its recorded signals ``{key: (T, D)}``.

    :func:`~lerobot_aim.asvm.events.detect_contact_events`, read from the float32 values the
    dataset stores, so that ``lerobot-aim-annotate --source=contacts`` finds the same events.
    """
    closed = np.asarray(signals[schema.GRIPPER_CLOSED], dtype=np.float64)[:, 0] > 0.5
    num_steps = len(closed)
    return detect_contact_events(
        gripper_closing=closed,
        pad_contacts=np.asarray(signals[schema.PAD_CONTACT], dtype=np.float64).reshape(num_steps, -1) > 0.5,
        object_position=np.asarray(signals[schema.OBJECT_POSITION], dtype=np.float64),
        dt=1.0 / fps,
        gripper_contact_points=[_finite_points(p) for p in signals[schema.CONTACT_POINTS]],
        support_contact_points=[_finite_points(p) for p in signals[schema.SUPPORT_POINTS]],
        object_half_height=object_half_height,
        speed_threshold=speed_threshold,
        settle_steps=settle_steps,
    )


# ── One episode ─────────────────────────────────────────────────────────


@dataclass
class EpisodeBuffer:
    """One simulated episode, held in memory until its events are known."""

    task: str
    task_description: str
    seed: int
    success: bool = False
    success_step: int | None = None  # first frame whose observation shows the success
    place_step: int | None = None  # first frame of the scripted placement, if any
    frames: list[dict[str, Any]] = field(default_factory=list)  # images, state, action, calibration
    signals: list[dict[str, np.ndarray]] = field(default_factory=list)
    events: list[InteractionEvent] = field(default_factory=list)
    sim_seconds: float = 0.0

    def stacked_signals(self) -> dict[str, np.ndarray]:
        return {key: np.stack([s[key] for s in self.signals]) for key in self.signals[0]}

    def __len__(self) -> int:
        return len(self.frames)


class _Placement:
    """Scripted placement of a held object: lower it onto a support, open the gripper, lift the hand."""

    def __init__(self) -> None:
        self.phase = "lower"
        self.lowered = 0

    def action(self, info: dict) -> np.ndarray:
        contact = info["contact"]
        if self.phase == "lower":
            if contact["num_support_points"] > 0 or self.lowered >= PLACE_MAX_LOWER_STEPS:
                self.phase = "release"
            else:
                self.lowered += 1
                return np.array([0.0, 0.0, -PLACE_LOWER_SPEED, 1.0], dtype=np.float32)
        if self.phase == "release":
            if not np.any(contact["pad_contacts"]) and not contact["gripper_object"]:
                self.phase = "retreat"
            else:
                return np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)
        return np.array([0.0, 0.0, PLACE_LOWER_SPEED, -1.0], dtype=np.float32)


def _held(info: dict) -> bool:
    return bool(info["gripper_command"] > 0 and np.all(info["contact"]["pad_contacts"]))


def record_episode(env: AIMMetaWorldEnv, seed: int, cfg: CollectConfig) -> EpisodeBuffer:
    """Run the expert for one episode (then the scripted placement, if any) and buffer every step.

    Frame t holds the observation at step t and the action taken from it. Recording stops
    ``steps_after_success`` frames after the first observation that shows the success (after the
    placement has settled, for placing tasks), or after ``max_steps`` frames without success.
    """
    started = time.perf_counter()
    obs, info = env.reset(seed=seed)
    episode = EpisodeBuffer(task=env.task, task_description=env.task_description, seed=seed)
    placement: _Placement | None = None
    done_step: int | None = None  # frame from which only `steps_after_success` more are recorded
    t = 0
    while True:
        if info["is_success"] and episode.success_step is None:
            episode.success, episode.success_step = True, t
            if cfg.places(env.task) and _held(info):
                placement, episode.place_step = _Placement(), t
            else:
                done_step = t
        if episode.success_step is None and t >= cfg.max_steps:
            break
        if placement is not None and done_step is None and _placement_settled(episode, cfg, t):
            done_step = t
        if done_step is not None and t - done_step >= cfg.steps_after_success:
            break
        if placement is not None and done_step is None and t - episode.place_step >= cfg.max_place_steps:
            logger.warning(
                "%s seed %d: the placed object did not come to rest within --max_place_steps=%d.",
                env.task,
                seed,
                cfg.max_place_steps,
            )
            done_step = t
            if cfg.steps_after_success == 0:
                break
        action = placement.action(info) if placement is not None else env.expert_action()
        episode.frames.append(_frame_of(obs, info, action, env.camera_names))
        episode.signals.append(_signals_of(info))
        obs, _, _, _, info = env.step(action)
        t += 1
    episode.sim_seconds = time.perf_counter() - started
    return episode


def _placement_settled(episode: EpisodeBuffer, cfg: CollectConfig, num_frames: int) -> bool:
    """A place event after the placement began, confirmed by ``settle_steps`` recorded still frames."""
    if num_frames - episode.place_step < cfg.settle_steps + 1:
        return False
    events = episode_events(episode.stacked_signals(), FPS, cfg.speed_threshold, cfg.settle_steps)
    return any(
        e.kind == "place" and episode.place_step <= e.step <= num_frames - cfg.settle_steps for e in events
    )


def _frame_of(obs: dict, info: dict, action: np.ndarray, cameras: list[str]) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
        "action": np.asarray(action, dtype=np.float32).copy(),
    }
    for name in cameras:
        frame[schema.image_key(name)] = obs["pixels"][name]
        frame[schema.intrinsics_key(name)] = np.asarray(info["cameras"][name]["intrinsics"], dtype=np.float32)
        frame[schema.extrinsics_key(name)] = np.asarray(info["cameras"][name]["extrinsics"], dtype=np.float32)
    return frame


def value_maps_of(
    episode: EpisodeBuffer, cameras: list[tuple[str, str]], height: int, width: int, cfg: CollectConfig
) -> list[dict[str, np.ndarray]]:
    """Per frame, ``{value-map key: (H, W, 3) uint8}`` of every camera, from the episode's events."""
    targets = next_interaction_targets(len(episode), episode.events, after_last=cfg.after_last)
    maps = []
    for t, frame in enumerate(episode.frames):
        per_camera = {}
        for name, _ in cameras:
            # The env's calibration describes the stored (possibly rotated) image: used as is.
            calib = CameraCalibration.from_flat(
                frame[schema.intrinsics_key(name)], frame[schema.extrinsics_key(name)], width, height
            )
            value = render_value_map(targets[t], calib, radius=cfg.radius)
            grey = np.round(np.clip(value, 0.0, 1.0) * 255).astype(np.uint8)
            per_camera[schema.value_map_key(name)] = np.repeat(grey[..., None], 3, axis=-1)
        maps.append(per_camera)
    return maps


# ── The collection log (meta/aim_collect.json) ──────────────────────────


def read_collect_log(root: str | Path) -> dict | None:
    """The collection log of a dataset written by ``lerobot-aim-collect`` (None if there is none)."""
    path = Path(root) / COLLECT_LOG
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _write_collect_log(root: Path, log: dict) -> None:
    path = root / COLLECT_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(log, indent=1))
    os.replace(tmp, path)


def _new_log(cfg: CollectConfig) -> dict:
    return {
        "version": COLLECT_LOG_VERSION,
        "command": COLLECT_COMMAND,
        "fps": FPS,
        "cameras": cfg.cameras,
        "image_size": cfg.image_size,
        "value_maps": cfg.map_settings(),
        "attempted_seeds": {},  # task -> seeds already run (kept, dropped or interrupted before saving)
        "episodes": [],  # one entry per saved episode
        "dropped": [],  # failed attempts that were not saved
    }


# ── The dataset ─────────────────────────────────────────────────────────


@dataclass
class TaskStats:
    attempts: int = 0
    successes: int = 0
    kept: int = 0
    frames: int = 0
    sim_seconds: float = 0.0  # simulation and rendering
    write_seconds: float = 0.0  # value maps, add_frame and video encoding

    @property
    def seconds_per_episode(self) -> float:
        return (self.sim_seconds + self.write_seconds) / max(self.attempts, 1)


@dataclass
class CollectSummary:
    """What :func:`collect_dataset` did."""

    repo_id: str
    root: str
    resumed: bool = False
    episodes_written: int = 0  # by this run
    total_episodes: int = 0  # in the dataset afterwards
    frames_written: int = 0
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (task, seed) of dropped attempts
    tasks: dict[str, TaskStats] = field(default_factory=dict)
    events: Counter = field(default_factory=Counter)  # kind -> count, in the episodes written
    episodes_without_events: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        """Per task: attempts, successes, episodes kept, seconds per attempt (simulation + writing)."""
        rows = [f"{'task':28s} attempts success kept frames/ep  s/episode (sim + write)"]
        for task, s in self.tasks.items():
            n = max(s.attempts, 1)
            rows.append(
                f"{task:28s} {s.attempts:8d} {s.successes:7d} {s.kept:4d} {s.frames / max(s.kept, 1):9.1f}"
                f"  {s.seconds_per_episode:9.2f} ({s.sim_seconds / n:.2f} + {s.write_seconds / n:.2f})"
            )
        return "\n".join(rows)


def _resolve_root(cfg: CollectConfig) -> Path:
    from lerobot.utils.constants import HF_LEROBOT_HOME

    return Path(cfg.root) if cfg.root else Path(HF_LEROBOT_HOME) / cfg.repo_id


def _comparable(features: dict) -> dict:
    from lerobot.utils.constants import DEFAULT_FEATURES

    return {
        key: (ft["dtype"], tuple(int(s) for s in ft["shape"]))
        for key, ft in features.items()
        if key not in DEFAULT_FEATURES
    }


def _check_resumable(
    meta: LeRobotDatasetMetadata, features: dict, cfg: CollectConfig, log: dict | None
) -> None:
    """Refuse to append episodes that would not match the existing dataset."""
    have, want = _comparable(meta.features), _comparable(features)
    if have != want:
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        changed = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        parts = [
            f"{what}: {keys}"
            for what, keys in (
                ("missing there", missing),
                ("not collected here", extra),
                ("another shape or dtype there", [f"{k} {have[k]} vs {want[k]}" for k in changed]),
            )
            if keys
        ]
        raise CollectError(
            f"The dataset at {meta.root} does not match this collection ({'; '.join(parts)}). Use the "
            "dataset's --cameras and --image_size, or another --root."
        )
    if meta.fps != FPS:
        raise CollectError(f"The dataset at {meta.root} has fps {meta.fps}, not MetaWorld's {FPS}.")
    if log is not None and log.get("value_maps") != cfg.map_settings():
        raise CollectError(
            f"The dataset at {meta.root} was collected with value-map settings {log.get('value_maps')}, "
            f"this run uses {cfg.map_settings()}: pass the dataset's settings (--radius, "
            "--speed_threshold, --settle_steps, --after_last), or collect into another --root and "
            "re-render the maps with `lerobot-aim-annotate --source=contacts`."
        )


def _existing_dataset(
    cfg: CollectConfig, root: Path, features: dict
) -> tuple[LeRobotDatasetMetadata | None, dict]:
    """(metadata of the dataset at ``root`` to append to, or None for a new one; collection log).

    Undoes what a killed run left next to ``root`` first, then refuses a dataset that is not whole.
    """
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    clean_staging(root)
    if not is_lerobot_dataset(root):
        if root.exists() and any(root.iterdir()):
            raise CollectError(
                f"{root} exists and is not a LeRobot dataset (no meta/info.json): choose another --root."
            )
        return None, _new_log(cfg)
    if not cfg.resume:
        raise CollectError(
            f"A dataset already exists at {root}. Pass --resume=true to append episodes to it, or "
            "choose another --root / --repo_id."
        )
    problems = dataset_problems(root)
    if problems:
        raise CollectError(
            f"The dataset at {root} is damaged, so no episode is appended to it: {'; '.join(problems)}. A "
            "writer was probably killed while saving (lerobot-aim-collect publishes each episode whole, "
            "other tools may not). Move it away and collect into a new --root."
        )
    meta = LeRobotDatasetMetadata(cfg.repo_id, root=root)
    log = read_collect_log(root)
    _check_resumable(meta, features, cfg, log)
    if log is None:
        log = _new_log(cfg)
        log["foreign"] = True  # written by another tool: its seeds are unknown
    return meta, log


def _used_seeds(
    meta: LeRobotDatasetMetadata | None, log: dict, task: str, description: str, first_seed: int
) -> set:
    """Seeds of ``task`` already used in the dataset: the log's, or (a dataset another tool wrote)
    the first seeds, one per existing episode of the task."""
    if task in log["attempted_seeds"] or not log.get("foreign") or meta is None:
        return set(log["attempted_seeds"].get(task, []))
    count = sum(description in list(tasks) for tasks in meta.episodes["tasks"]) if meta.total_episodes else 0
    seeds = list(range(first_seed, first_seed + count))
    log["attempted_seeds"][task] = seeds
    return set(seeds)


def _next_seed(used: set, start: int) -> int:
    seed = start
    while seed in used:
        seed += 1
    return seed


def collect_dataset(cfg: CollectConfig) -> CollectSummary:
    """Collect ``cfg.num_episodes`` episodes per task into the dataset at ``cfg.root`` (see module doc).

    Raises :class:`CollectError` on bad inputs before anything is written. Each episode is written
    into a staged copy of the dataset and published by renaming (:mod:`lerobot_aim.data.publish`):
    whatever happens, even SIGKILL, the folder at ``cfg.root`` holds the episodes saved so far (or
    nothing, before the first one).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    started = time.perf_counter()
    root = _resolve_root(cfg)
    cameras = parse_cameras(cfg.cameras)
    features = collect_features(cameras, cfg.image_size, cfg.image_size)
    summary = CollectSummary(repo_id=cfg.repo_id, root=str(root))

    with quiet_libav(), _no_datasets_progress_bars():
        meta, log = _existing_dataset(cfg, root, features)
        summary.resumed = meta is not None
        summary.total_episodes = meta.total_episodes if meta is not None else 0
        if meta is not None:
            logger.info("Appending to %s (%d episodes).", root, meta.total_episodes)
        progress = tqdm(total=len(cfg.tasks) * cfg.num_episodes, desc="Collecting", unit="episode")
        try:
            for task in cfg.tasks:
                _collect_task(cfg, task, root, features, cameras, meta, log, summary, progress)
        finally:
            progress.close()
    summary.seconds = time.perf_counter() - started
    logger.info(
        "%s at %s: %d episode(s) written (%d frames), %d in the dataset, %d attempt(s) dropped, events %s, "
        "in %.1f s.\n%s",
        cfg.repo_id,
        root,
        summary.episodes_written,
        summary.frames_written,
        summary.total_episodes,
        len(summary.dropped),
        dict(summary.events),
        summary.seconds,
        summary.table(),
    )
    if cfg.push_to_hub and summary.total_episodes:
        LeRobotDataset(cfg.repo_id, root=root).push_to_hub(
            tags=["AIM", "value-maps", "ASVM", "metaworld"], private=cfg.private
        )
    return summary


def _collect_task(cfg, task, root, features, cameras, meta, log, summary, progress) -> None:
    """Record and publish the episodes of one task (see :func:`collect_dataset`)."""
    from lerobot_aim.envs.metaworld_env import AIMMetaWorldEnv

    stats = summary.tasks.setdefault(task, TaskStats())
    env = AIMMetaWorldEnv(
        task,
        cameras=cfg.cameras,
        observation_height=cfg.image_size,
        observation_width=cfg.image_size,
        episode_length=cfg.max_steps + cfg.max_place_steps + cfg.steps_after_success + 1,
        terminate_on_success=False,
    )
    try:
        used = _used_seeds(meta, log, task, env.task_description, cfg.seed)
        seed = cfg.seed
        while stats.kept < cfg.num_episodes and stats.attempts < cfg.attempts_per_task:
            seed = _next_seed(used, seed)
            used.add(seed)
            progress.set_postfix_str(f"{task} seed {seed}")
            episode = record_episode(env, seed, cfg)
            stats.attempts += 1
            stats.successes += episode.success
            stats.sim_seconds += episode.sim_seconds
            if not episode.success and not cfg.keep_failed:
                logger.info(
                    "Dropped %s seed %d: the expert did not succeed within %d steps.",
                    task,
                    seed,
                    cfg.max_steps,
                )
                summary.dropped.append((task, seed))
                log["attempted_seeds"].setdefault(task, []).append(seed)
                log["dropped"].append({"task": task, "seed": seed, "reason": "expert failed"})
                if is_lerobot_dataset(root):  # one file, replaced atomically
                    _write_collect_log(root, log)
                continue
            write_started = time.perf_counter()
            index = _publish_episode(cfg, root, features, cameras, episode, log)
            stats.write_seconds += time.perf_counter() - write_started
            stats.kept += 1
            stats.frames += len(episode)
            summary.episodes_written += 1
            summary.frames_written += len(episode)
            summary.total_episodes = index + 1
            for event in episode.events:
                summary.events[event.kind] += 1
            if not episode.events:
                summary.episodes_without_events.append(index)
            progress.update(1)
    finally:
        env.close()
    if stats.kept < cfg.num_episodes:
        logger.warning(
            "%s: only %d of %d episodes after %d attempts (the expert failed %d times).",
            task,
            stats.kept,
            cfg.num_episodes,
            stats.attempts,
            stats.attempts - stats.successes,
        )


def _publish_episode(cfg, root, features, cameras, episode, log) -> int:
    """Save one episode in a staged copy of the dataset, with the updated log, and publish it; its index.

    The log (seed and entry of the episode) is published with the episode, so after a kill either
    both are in the dataset or neither is, and a rerun records the same seed again.
    """
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    preset = cfg.preset if cfg.preset not in ("", "none", "None") else None
    encoder = RGBEncoderConfig(vcodec=cfg.vcodec, crf=cfg.crf, g=2, preset=preset)
    with staged_update(root, COLLECT_STAGING) as staged:
        if staged.exists():
            dataset = LeRobotDataset.resume(cfg.repo_id, root=staged, rgb_encoder=encoder, encoder_threads=1)
        else:
            dataset = LeRobotDataset.create(
                repo_id=cfg.repo_id,
                fps=FPS,
                features=features,
                root=staged,
                robot_type=ROBOT_TYPE,
                use_videos=True,
                rgb_encoder=encoder,
                encoder_threads=1,
            )
        index = _save_episode(dataset, episode, cameras, cfg.image_size, cfg.image_size, cfg)
        dataset.finalize()
        check_value_map_info(staged, features)
        shutil.rmtree(staged / "images", ignore_errors=True)  # LeRobot's emptied frame folders
        entry = _episode_entry(index, episode)
        log["attempted_seeds"].setdefault(episode.task, []).append(episode.seed)
        log["episodes"].append(entry)
        try:
            _write_collect_log(staged, log)
        except BaseException:
            log["attempted_seeds"][episode.task].pop()
            log["episodes"].pop()
            raise
    return index


@contextlib.contextmanager
def _no_datasets_progress_bars():
    """Hide the `datasets` "Map" bar that LeRobot's save_episode shows, under our own progress bar."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _save_episode(
    dataset: LeRobotDataset,
    episode: EpisodeBuffer,
    cameras: list[tuple[str, str]],
    height: int,
    width: int,
    cfg: CollectConfig,
) -> int:
    """Find the episode's events, render its value maps, add its frames and save it; its index."""
    signals = episode.stacked_signals()
    episode.events = episode_events(signals, FPS, cfg.speed_threshold, cfg.settle_steps)
    maps = value_maps_of(episode, cameras, height, width, cfg)
    index = dataset.meta.total_episodes
    for t, frame in enumerate(episode.frames):
        dataset.add_frame(
            {
                **frame,
                **maps[t],
                **{key: values[t] for key, values in signals.items()},
                "task": episode.task_description,
            }
        )
    # Encode in this process: a process pool per episode costs more than it saves on small episodes.
    dataset.save_episode(parallel_encoding=False)
    return index


def _episode_entry(index: int, episode: EpisodeBuffer) -> dict:
    return {
        "episode_index": index,
        "task": episode.task,
        "seed": episode.seed,
        "success": episode.success,
        "success_step": episode.success_step,
        "place_step": episode.place_step,
        "num_frames": len(episode),
        "events": [
            {"kind": e.kind, "step": e.step, "points": np.round(e.points, 5).tolist()} for e in episode.events
        ],
    }


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Console entry point (``lerobot-aim-collect``)."""
    from lerobot.configs import parser
    from lerobot.utils.utils import init_logging

    init_logging()
    # A job scheduler's SIGTERM ends the run like Ctrl-C: through the `finally` that finalizes the
    # dataset (Python's default SIGTERM action would skip it and leave unreadable parquet files).
    signal.signal(signal.SIGTERM, _exit_on_signal)

    def run(cfg):
        return collect_dataset(cfg)

    # parser.wrap reads the config class from the annotation (a string under `from __future__`).
    run.__annotations__ = {"cfg": CollectConfig}
    try:
        parser.wrap()(run)()
    except Exception as error:
        # draccus wraps errors of the config's __post_init__ in its ParsingError.
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, CollectError):
            cause = cause.__cause__
        if cause is None:
            raise
        print(f"{COLLECT_COMMAND}: error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()


__all__ = [
    "PLACE_TASKS",
    "CollectConfig",
    "CollectError",
    "CollectSummary",
    "EpisodeBuffer",
    "collect_dataset",
    "collect_features",
    "episode_events",
    "read_collect_log",
    "record_episode",
    "value_maps_of",
]
