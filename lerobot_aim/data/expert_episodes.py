"""MetaWorld expert episodes for ``lerobot-aim-collect``: simulated, buffered whole, then given value maps.

MetaWorld's scripted experts (``metaworld.policies``) run in the ``aim_metaworld`` env
(:class:`lerobot_aim.envs.AIMMetaWorldEnv`). Value maps show the NEXT interaction region, so they need
the future of the episode: each episode is buffered whole (:class:`EpisodeBuffer`: frames, executed
actions, calibration and the raw annotation signals of :mod:`lerobot_aim.data.schema`), its events are
found once it has ended (:func:`episode_events`: the one rule of
:func:`lerobot_aim.asvm.events.detect_contact_events`) and each step's region is drawn with that
step's calibration, used as is (:func:`value_maps_of`).

MetaWorld's experts never let go of what they carry: they hold it at the goal (which, for
pick-place, is a point in the air). For pick-and-place tasks the collector therefore appends a
scripted placement once the task has succeeded (:class:`Placement`): it lowers the held object until
it touches a support, opens the gripper, lifts the hand and records until the object has come to
rest, which gives the episode its place event. Those frames come after the success, which LeRobot's
MetaWorld evaluation never reaches (episodes end at the first success).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
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
from lerobot_aim.data.configs import CollectConfig

if TYPE_CHECKING:
    from lerobot_aim.envs.metaworld_env import AIMMetaWorldEnv

logger = logging.getLogger(__name__)

FPS = 80  # MetaWorld's control rate (5 physics steps of 2.5 ms), as LeRobot's MetaWorld datasets
# Scripted placement: hand speed (fraction of MetaWorld's 1 cm per step) and step limits.
PLACE_LOWER_SPEED = 0.5
PLACE_MAX_LOWER_STEPS = 60


def signals_of(info: dict) -> dict[str, np.ndarray]:
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


class Placement:
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
    placement: Placement | None = None
    done_step: int | None = None  # frame from which only `steps_after_success` more are recorded
    t = 0
    while True:
        if info["is_success"] and episode.success_step is None:
            episode.success, episode.success_step = True, t
            if cfg.places(env.task) and _held(info):
                placement, episode.place_step = Placement(), t
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
        episode.signals.append(signals_of(info))
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
            per_camera[schema.value_map_key(name)] = schema.value_map_frame(value)
        maps.append(per_camera)
    return maps
