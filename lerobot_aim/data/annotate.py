"""``lerobot-aim-annotate``: add spatial value maps to a LeRobotDataset, written as a new dataset.

AIM trains on value maps (``observation.value_maps.<cam>``, see :mod:`lerobot_aim.data.schema`): per
camera and step, a Gaussian heat map of the next interaction region. This command makes them for an
existing dataset and writes a *new* dataset with every feature of the source plus the maps; the
source is only read.

Two sources of interaction events:

- ``--source=poses`` (real arms, or any dataset with end-effector poses): the tool-centre position
  of each arm (``--ee_key`` / ``--ee_slices``) and its gripper state (``--gripper_key`` /
  ``--gripper_indices``, thresholded): a grasp where a gripper closes, a placement where it opens
  (:func:`lerobot_aim.asvm.events.detect_gripper_events`), every arm into the same maps. Arms that
  record joint positions only: ``--fk_urdf`` / ``--fk_frame`` / ``--joint_slices`` compute the
  tool-centre positions by forward kinematics (:mod:`lerobot_aim.data.kinematics`).
- ``--source=contacts`` (simulators): the raw contact signals of :mod:`lerobot_aim.data.schema`
  (``annotation.pad_contact``, ``annotation.object_position``, optional contact and support points,
  ``observation.gripper_closed``): a grasp at the first firm contact while closing, a placement when
  the released object has come to rest, the first contact for tasks without a grasp
  (:func:`~lerobot_aim.asvm.events.detect_contact_events`, the rule ``lerobot-aim-collect`` uses).

At every step the next event's region of each arm (:func:`~lerobot_aim.asvm.events.next_interaction_targets`)
is drawn with that step's calibration (:func:`~lerobot_aim.asvm.render.render_value_map`). The
calibration of each camera comes from the dataset (``observation.camera.<cam>.intrinsics`` /
``.extrinsics`` per step, so moving wrist cameras work) or, for fixed cameras, from a YAML file
(``--calibration=calib.yaml``, format in :data:`CALIBRATION_YAML_HELP`).

Example (a RoboTwin-like dataset whose 16-d state is ``[xyz, quat, gripper]`` per arm, gripper 1 = open)::

    lerobot-aim-annotate --repo_id=me/robotwin_task --output_repo_id=me/robotwin_task_aim \\
        --source=poses --ee_key=observation.state --ee_slices="0:3;8:11" \\
        --gripper_key=observation.state --gripper_indices=7,15 --gripper_closed_is_low=true \\
        --calibration=calib.yaml --contact_sheets=true

Videos are decoded and re-encoded through ``LeRobotDataset`` (``--vcodec``, ``--crf``): copied
camera videos therefore differ slightly from the source's (a lossy codec, twice). The output is
written to a staging folder next to ``--output_root`` and renamed into place at the end
(:mod:`lerobot_aim.data.publish`), so an interrupted run leaves no half dataset there; ``--overwrite=true``
replaces only a LeRobot dataset. The dataset card (``README.md``) documents the maps.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.asvm.events import (
    SETTLE_SPEED,
    SETTLE_STEPS,
    InteractionEvent,
    detect_contact_events,
    detect_gripper_events,
    next_interaction_targets,
)
from lerobot_aim.asvm.render import render_value_map
from lerobot_aim.data import schema
from lerobot_aim.data.card import AnnotationSummary, value_map_description, write_dataset_card
from lerobot_aim.data.integrity import is_lerobot_dataset
from lerobot_aim.data.publish import clean_staging, publish, staging_path

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

logger = logging.getLogger(__name__)

SOURCES = ("poses", "contacts")
DECODE_CHUNK = 128  # frames decoded and written at a time (bounds memory on long episodes)
CONTACT_SHEET_DIR = "contact_sheets"
ANNOTATE_STAGING = "aim-annotate"  # staging folders: .<output name>.aim-annotate-<id>.tmp

CALIBRATION_YAML_HELP = """\
cameras:
  head:                                    # camera name as in observation.images.<name>
    K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # intrinsics, pixels (or 9 numbers)
    extrinsics: [[r11, r12, r13, tx],          # world-to-camera [R|t], OpenCV frame (x right,
                 [r21, r22, r23, ty],          # y down, z forward), metres: 3x4 or 4x4
                 [r31, r32, r33, tz]]          # (RoboTwin: the camera's extrinsic_cv)
    width: 320                             # image size the K above is for (rescaled if the
    height: 240                            # dataset stores another size)
    flip: false                            # optional: stored image rotated 180 deg (or flip_u / flip_v)
    # convention: camera_to_world          # optional, when extrinsics is the camera pose instead"""


class AnnotationError(ValueError):
    """A problem with the command's inputs, with what to do about it."""


@dataclass
class AnnotateConfig:
    # Dataset to annotate: a Hub repo id, or any name when --root points to a local copy. Never modified.
    repo_id: str
    # Repo id of the annotated dataset that is written.
    output_repo_id: str
    # Local folder of the source dataset (default: $HF_LEROBOT_HOME/<repo_id>, downloaded if absent).
    root: str | None = None
    # Folder of the annotated dataset (default: $HF_LEROBOT_HOME/<output_repo_id>). Must not exist
    # unless --overwrite=true.
    output_root: str | None = None
    # Where the interaction events come from: "poses" (end-effector positions + gripper open/close,
    # real arms) or "contacts" (recorded contact signals, simulators).
    source: str = "poses"
    # Cameras to annotate, comma-separated (default: every camera of the dataset).
    cameras: str | None = None
    # Head camera (full size in AIM's T-pose canvas; default: a camera named like head/high/top,
    # else the first one).
    head_camera: str | None = None
    # World radius of an interaction point, metres: the Gaussian's sigma is focal * radius / depth pixels.
    radius: float = 0.03
    # After an arm's last event: "last" keeps showing its region, "empty" drops it from the maps.
    after_last: str = "last"

    # Feature holding the end-effector (tool-centre) xyz of every arm, world frame, metres
    # (default: observation.ee_position). Needed by --source=poses.
    ee_key: str | None = None
    # Which dims of --ee_key are each arm's xyz: "start:stop" per arm, separated by ';'
    # (e.g. "0:3;8:11"). Default: consecutive triples of the whole feature.
    ee_slices: str | None = None
    # Feature holding each arm's gripper state (default: observation.gripper_closed, 1 = closed).
    gripper_key: str | None = None
    # Dims of --gripper_key holding each arm's gripper value, comma-separated (e.g. "7,15").
    # Default: every dim (one per arm).
    gripper_indices: str | None = None
    # A gripper counts as closed when its value is above this threshold (below it with
    # --gripper_closed_is_low=true).
    gripper_closed_threshold: float = 0.5
    # Set to true when low gripper values mean closed (e.g. an opening width; RoboTwin: 1 = open).
    gripper_closed_is_low: bool = False
    # --source=poses from joint positions: the robot's URDF (or one per arm, separated by ';'); the
    # end-effector positions are computed by forward kinematics (MuJoCo) instead of read (--ee_key).
    fk_urdf: str | None = None
    # With --fk_urdf: the link whose origin is each arm's tool-centre point, one per arm (';'-separated).
    fk_frame: str | None = None
    # With --fk_urdf: feature holding the joint positions (default: observation.state).
    joint_key: str | None = None
    # With --fk_urdf: the dims of --joint_key feeding each arm's chain (the joints from the URDF root to
    # --fk_frame, in that order), "start:stop" per arm separated by ';'. Default: the first dims.
    joint_slices: str | None = None
    # With --fk_urdf: unit of revolute joint positions, "rad" or "deg" (LeRobot's SO and Koch arms: deg).
    joint_units: str = "rad"
    # With --fk_urdf: world pose of each URDF root (the frame of the camera extrinsics), per arm
    # "x,y,z" or "x,y,z,qx,qy,qz,qw" separated by ';'. Default: the URDF root is the world frame.
    fk_base_pose: str | None = None
    # Camera calibration: "dataset" (per-step observation.camera.<cam>.intrinsics/.extrinsics
    # columns) or a YAML file of fixed cameras (cameras it does not list still use dataset columns).
    calibration: str = "dataset"

    # --source=contacts: per-pad gripper-object contact flags (n_arms * pads).
    pad_contact_key: str = schema.PAD_CONTACT
    # --source=contacts: the target object's centre of mass (3, or 3 per arm).
    object_position_key: str = schema.OBJECT_POSITION
    # --source=contacts: gripper-object contact points (NaN-padded); used when the dataset has it.
    contact_points_key: str = schema.CONTACT_POINTS
    # --source=contacts: object-support contact points (NaN-padded); used when the dataset has it.
    support_points_key: str = schema.SUPPORT_POINTS
    # --source=contacts: centre-of-mass height above the object's base, metres (place region
    # without support points).
    object_half_height: float = 0.0
    # --source=contacts: speed (m/s) below which a released object counts as still (as lerobot-aim-collect).
    speed_threshold: float = SETTLE_SPEED
    # --source=contacts: consecutive still steps that confirm a placement.
    settle_steps: int = SETTLE_STEPS

    # Write <output_root>/contact_sheets/episode_XXXX.png: frames with value maps overlaid, a row per camera.
    contact_sheets: bool = False
    # Frames per camera row in a contact sheet (evenly spaced over the episode).
    contact_sheet_frames: int = 8
    # Integer upscaling of contact-sheet tiles (for tiny images).
    contact_sheet_scale: int = 1
    # Video codec of the output's videos (all are re-encoded): h264, hevc, libsvtav1, ...
    vcodec: str = "h264"
    # Quality of the re-encoded videos (lower is better and larger).
    crf: int = 18
    # Encoder speed preset (codec-specific; None: the codec's default).
    preset: str | None = "fast"
    # Video decoding backend of the source (torchcodec or pyav; default: LeRobot's choice).
    video_backend: str | None = None
    # Threads writing frames to disk before encoding (0: in the main thread).
    image_writer_threads: int = 4
    # Replace an existing output dataset.
    overwrite: bool = False
    # Push the annotated dataset to the Hub as --output_repo_id.
    push_to_hub: bool = False
    # Make the pushed dataset private.
    private: bool = False
    # License written in the dataset card.
    license: str = "apache-2.0"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise AnnotationError(f"--source must be one of {SOURCES}, got {self.source!r}.")
        if self.after_last not in ("last", "empty"):
            raise AnnotationError(f"--after_last must be 'last' or 'empty', got {self.after_last!r}.")
        if self.radius <= 0:
            raise AnnotationError(f"--radius must be > 0 (metres), got {self.radius}.")
        if self.contact_sheet_frames < 1 or self.contact_sheet_scale < 1:
            raise AnnotationError("--contact_sheet_frames and --contact_sheet_scale must be >= 1.")
        if self.fk_urdf:
            if self.source != "poses" or self.ee_key or self.ee_slices:
                raise AnnotationError(
                    "--fk_urdf computes the end-effector positions of --source=poses from joint positions: "
                    "use it with --source=poses and without --ee_key / --ee_slices."
                )
            if not self.fk_frame:
                raise AnnotationError(
                    "--fk_urdf needs --fk_frame=<link>: the URDF link at each arm's tool-centre point "
                    "(one per arm, separated by ';'), e.g. --fk_frame=gripper_frame_link."
                )
            if self.joint_units not in ("rad", "deg"):
                raise AnnotationError(f"--joint_units must be 'rad' or 'deg', got {self.joint_units!r}.")


# ── Signals ─────────────────────────────────────────────────────────────


def _parse_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").replace(";", ",").split(",") if item.strip()]


def parse_slices(text: str, flag: str = "--ee_slices") -> list[slice]:
    """``"0:3;8:11"`` -> ``[slice(0, 3), slice(8, 11)]`` (``,`` also separates arms)."""
    slices = []
    for item in _parse_list(text):
        start, sep, stop = item.partition(":")
        try:
            if not sep:
                raise ValueError
            slices.append(slice(int(start), int(stop)))
        except ValueError:
            raise AnnotationError(
                f"Bad slice {item!r} in {flag}={text!r}: expected 'start:stop' per arm, e.g. '0:3;8:11'."
            ) from None
    return slices


def _numeric_keys(features: dict) -> list[str]:
    from lerobot.utils.constants import DEFAULT_FEATURES

    return sorted(
        k
        for k, ft in features.items()
        if ft["dtype"] not in ("image", "video", "string", "language") and k not in DEFAULT_FEATURES
    )


def _feature_dim(features: dict, key: str) -> int:
    return int(np.prod(features[key]["shape"]))


def _describe_keys(features: dict) -> str:
    return ", ".join(
        f"{k} ({_feature_dim(features, k)}{', names: ' + _short_names(features[k]) if features[k].get('names') else ''})"
        for k in _numeric_keys(features)
    )


def _short_names(ft: dict) -> str:
    names = ft.get("names")
    if isinstance(names, dict):
        names = next(iter(names.values()), [])
    names = list(names or [])
    return "[" + ", ".join(map(str, names[:16])) + (", ..." if len(names) > 16 else "") + "]"


def _require_key(features: dict, key: str | None, default: str, flag: str, what: str, extra: str = "") -> str:
    key = key or default
    if key not in features:
        given = "" if key == default else f" {key!r}"
        default_note = f" (default {default!r})" if key == default else ""
        raise AnnotationError(
            f"The dataset has no {what} feature{given}{default_note}. Its numeric features are: "
            f"{_describe_keys(features) or 'none'}. Set {flag}=<feature>{extra}."
        )
    return key


@dataclass
class _ArmSignals:
    """Per-step arrays of one episode that the events are computed from."""

    gripper_closed: np.ndarray  # (T, A) bool
    ee_position: np.ndarray | None = None  # (T, A, 3)
    pads: list[np.ndarray] | None = None  # A x (T, P) bool
    object_position: list[np.ndarray] | None = None  # A x (T, 3)
    contact_points: list[list[np.ndarray]] | None = None  # A x T x (K_t, 3)
    support_points: list[list[np.ndarray]] | None = None  # A x T x (K_t, 3)


class _SignalReader:
    """Validates the signal keys once, then reads an episode's signals from its rows."""

    def __init__(self, cfg: AnnotateConfig, features: dict):
        self.cfg = cfg
        self.features = features
        self.keys: list[str] = []
        self.descriptions: list[str] = []
        self.fk = None
        if cfg.source == "poses":
            self._setup_poses()
            self._setup_gripper()
            self._check_arms()
        else:
            self._setup_gripper()
            self._setup_contacts()

    def _setup_gripper(self) -> None:
        cfg, features = self.cfg, self.features
        self.gripper_key = _require_key(
            features,
            cfg.gripper_key,
            schema.GRIPPER_CLOSED,
            "--gripper_key",
            "gripper state",
            " and --gripper_indices=<one dim per arm, e.g. 7,15> (and --gripper_closed_is_low=true if low "
            "values mean closed)",
        )
        dim = _feature_dim(features, self.gripper_key)
        if cfg.gripper_indices:
            try:
                self.gripper_indices = [int(i) for i in _parse_list(cfg.gripper_indices)]
            except ValueError:
                raise AnnotationError(
                    f"--gripper_indices={cfg.gripper_indices!r}: expected integers separated by commas, e.g. '7,15'."
                ) from None
        else:
            self.gripper_indices = list(range(dim))
        bad = [i for i in self.gripper_indices if not 0 <= i < dim]
        if bad or not self.gripper_indices:
            raise AnnotationError(
                f"--gripper_indices {self.gripper_indices} do not fit {self.gripper_key!r}, which has {dim} dims."
            )
        self.num_arms = len(self.gripper_indices)
        self.keys.append(self.gripper_key)
        closed = "<" if cfg.gripper_closed_is_low else ">"
        self.descriptions.append(
            f"Gripper state: `{self.gripper_key}` dims {self.gripper_indices} (one per arm), closed when "
            f"value {closed} {cfg.gripper_closed_threshold:g}."
        )

    def _setup_poses(self) -> None:
        cfg, features = self.cfg, self.features
        if cfg.fk_urdf:
            self._setup_fk()
            return
        self.ee_key = _require_key(
            features,
            cfg.ee_key,
            schema.EE_POSITION,
            "--ee_key",
            "end-effector position",
            " and --ee_slices=<the xyz dims of each arm, e.g. '0:3;8:11'> (tool-centre point, world frame, metres), "
            "or compute them from joint positions with --fk_urdf=<robot.urdf> --fk_frame=<tool link> "
            "--joint_slices=<each arm's joint dims>",
        )
        dim = _feature_dim(features, self.ee_key)
        if cfg.ee_slices:
            self.ee_slices = parse_slices(cfg.ee_slices)
        elif dim % 3 == 0:
            self.ee_slices = [slice(3 * a, 3 * a + 3) for a in range(dim // 3)]
        else:
            raise AnnotationError(
                f"{self.ee_key!r} has {dim} dims, not a multiple of 3: set --ee_slices to the xyz dims of "
                "each arm, e.g. --ee_slices='0:3;8:11'."
            )
        for s in self.ee_slices:
            if s.stop - s.start != 3 or s.start < 0 or s.stop > dim:
                raise AnnotationError(
                    f"--ee_slices: {s.start}:{s.stop} must select 3 dims (xyz) within the {dim} dims of {self.ee_key!r}."
                )
        self.keys.append(self.ee_key)
        self.descriptions.append(
            f"End-effector positions: `{self.ee_key}` dims "
            f"{'; '.join(f'{s.start}:{s.stop}' for s in self.ee_slices)} ({len(self.ee_slices)} arm(s))."
        )

    def _setup_fk(self) -> None:
        from lerobot_aim.data.kinematics import ChainFK, KinematicsError

        cfg, features = self.cfg, self.features
        self.joint_key = _require_key(
            features, cfg.joint_key, "observation.state", "--joint_key", "joint position"
        )
        dim = _feature_dim(features, self.joint_key)
        frames = _parse_list(cfg.fk_frame)
        urdfs = [p.strip() for p in cfg.fk_urdf.split(";") if p.strip()]
        slices = parse_slices(cfg.joint_slices, flag="--joint_slices") if cfg.joint_slices else None
        bases = [item.split(",") for item in (cfg.fk_base_pose or "").split(";") if item.strip()] or None
        try:
            self.fk = ChainFK(urdfs, frames, slices, cfg.joint_units, bases)
        except KinematicsError as error:
            raise AnnotationError(str(error)) from None
        slices = [arm["slice"] for arm in self.fk.arms]
        bad = [f"{s.start}:{s.stop}" for s in slices if s.start < 0 or s.stop > dim]
        if bad:
            raise AnnotationError(
                f"Joint dims {bad} do not fit the {dim} dims of {self.joint_key!r}: set --joint_slices to each "
                "arm's joint dims (one per chain joint: " + "; ".join(self.fk.describe()) + ")."
            )
        self.ee_slices = slices
        self.keys.append(self.joint_key)
        self.descriptions.append(
            f"End-effector positions by forward kinematics of `{self.joint_key}`: "
            + "; ".join(self.fk.describe())
            + "."
        )

    def _check_arms(self) -> None:
        if len(self.ee_slices) != self.num_arms:
            raise AnnotationError(
                f"{len(self.ee_slices)} arm(s) in the end-effector slices {[f'{s.start}:{s.stop}' for s in self.ee_slices]} "
                f"but {self.num_arms} gripper value(s) {self.gripper_indices}: give one of each per arm "
                f"({'--fk_frame / --joint_slices' if self.fk else '--ee_slices'}, --gripper_indices)."
            )

    def _setup_contacts(self) -> None:
        cfg, features, arms = self.cfg, self.features, self.num_arms
        self.pad_key = _require_key(
            features, cfg.pad_contact_key, schema.PAD_CONTACT, "--pad_contact_key", "pad contact"
        )
        pad_dim = _feature_dim(features, self.pad_key)
        if pad_dim % arms:
            raise AnnotationError(
                f"{self.pad_key!r} has {pad_dim} dims, not a multiple of the {arms} arm(s) of the gripper signal."
            )
        self.pads_per_arm = pad_dim // arms
        self.object_key = _require_key(
            features,
            cfg.object_position_key,
            schema.OBJECT_POSITION,
            "--object_position_key",
            "object position",
        )
        object_dim = _feature_dim(features, self.object_key)
        if object_dim not in (3, 3 * arms):
            raise AnnotationError(f"{self.object_key!r} must have 3 or {3 * arms} dims, has {object_dim}.")
        self.points_keys = {}
        for name, key in (("contact", cfg.contact_points_key), ("support", cfg.support_points_key)):
            if key and key in features:
                dim = _feature_dim(features, key)
                if dim % (3 * arms):
                    raise AnnotationError(f"{key!r} has {dim} dims, not a multiple of 3 x {arms} arm(s).")
                self.points_keys[name] = key
        self.keys += [self.pad_key, self.object_key, *self.points_keys.values()]
        self.descriptions += [
            f"Pad contacts: `{self.pad_key}` ({self.pads_per_arm} per arm); object position: `{self.object_key}`.",
            "Contact points: "
            + (", ".join(f"`{k}` ({n})" for n, k in self.points_keys.items()) or "none recorded")
            + f"; speed threshold {cfg.speed_threshold:g} m/s over {cfg.settle_steps} steps, "
            f"object half height {cfg.object_half_height:g} m.",
        ]

    def used_dims(self) -> dict[str, list[int] | None]:
        """Signal feature -> the dims the events are made from (None: every dim); NaN-padded point
        features are not listed."""
        used: dict[str, list[int] | None] = {self.gripper_key: list(self.gripper_indices)}
        if self.cfg.source == "contacts":
            used.update({self.pad_key: None, self.object_key: None})
        elif self.fk is not None:
            used[self.joint_key] = [d for s in self.ee_slices for d in range(s.start, s.stop)]
        else:
            used[self.ee_key] = [d for s in self.ee_slices for d in range(s.start, s.stop)]
        return used

    def check_finite(self, columns: dict[str, np.ndarray], episode: int) -> None:
        """Refuse an episode whose signals hold NaN or inf: no map can be placed from them."""
        for key, dims in self.used_dims().items():
            values = columns[key] if dims is None else columns[key][:, dims]
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if len(bad):
                raise AnnotationError(
                    f"Episode {episode}: `{key}` is NaN or infinite at {len(bad)} of {len(values)} frames "
                    f"({_frame_list(bad)}), so its value maps cannot be placed. Repair those values or drop the "
                    f"episode (`lerobot-edit-dataset --operation.type=delete_episodes "
                    f"--operation.episode_indices=[{episode}]`), then annotate again."
                )

    def read(self, columns: dict[str, np.ndarray]) -> _ArmSignals:
        """Signals of one episode from its numeric columns ``{key: (T, D)}``."""
        cfg, arms = self.cfg, self.num_arms
        grip = columns[self.gripper_key][:, self.gripper_indices]
        with np.errstate(invalid="ignore"):
            closed = (
                grip < cfg.gripper_closed_threshold
                if cfg.gripper_closed_is_low
                else grip > cfg.gripper_closed_threshold
            )
        signals = _ArmSignals(gripper_closed=closed)
        if cfg.source == "poses":
            if self.fk is not None:
                signals.ee_position = self.fk.positions(columns[self.joint_key])
                return signals
            ee = columns[self.ee_key]
            signals.ee_position = np.stack([ee[:, s] for s in self.ee_slices], axis=1)
            return signals
        num_steps = len(closed)
        pads = columns[self.pad_key].reshape(num_steps, arms, self.pads_per_arm) > 0.5
        signals.pads = [pads[:, a] for a in range(arms)]
        obj = columns[self.object_key].reshape(num_steps, -1, 3)
        signals.object_position = [obj[:, a if obj.shape[1] > 1 else 0] for a in range(arms)]
        for name, key in self.points_keys.items():
            points = columns[key].reshape(num_steps, arms, -1, 3)
            per_arm = [[p[np.isfinite(p).all(axis=1)] for p in points[:, a]] for a in range(arms)]
            setattr(signals, f"{name}_points", per_arm)
        return signals

    def events(self, signals: _ArmSignals, fps: float) -> list[InteractionEvent]:
        """Interaction events of one episode, every arm."""
        cfg = self.cfg
        if cfg.source == "poses":
            return detect_gripper_events(signals.ee_position, signals.gripper_closed)
        events: list[InteractionEvent] = []
        for arm in range(self.num_arms):
            events += detect_contact_events(
                gripper_closing=signals.gripper_closed[:, arm],
                pad_contacts=signals.pads[arm],
                object_position=signals.object_position[arm],
                dt=1.0 / fps,
                gripper_contact_points=signals.contact_points[arm] if signals.contact_points else None,
                support_contact_points=signals.support_points[arm] if signals.support_points else None,
                object_half_height=cfg.object_half_height,
                speed_threshold=cfg.speed_threshold,
                settle_steps=cfg.settle_steps,
                arm=arm,
            )
        return sorted(events, key=lambda e: (e.step, e.arm))


def _frame_list(frames: np.ndarray) -> str:
    shown = ", ".join(str(int(f)) for f in frames[:8])
    return f"frames {shown}{', ...' if len(frames) > 8 else ''}"


# ── Cameras ─────────────────────────────────────────────────────────────


@dataclass
class _Camera:
    name: str
    height: int
    width: int
    dtype: str  # "video" or "image", as the camera's image feature
    fixed: CameraCalibration | None = None  # from the YAML file
    origin: str = ""

    @property
    def per_step(self) -> bool:
        return self.fixed is None

    def check_finite(self, columns: dict[str, np.ndarray], episode: int) -> None:
        """Refuse an episode whose calibration columns for this camera hold NaN or inf."""
        if self.fixed is not None:
            return
        for key in (schema.intrinsics_key(self.name), schema.extrinsics_key(self.name)):
            bad = np.flatnonzero(~np.isfinite(columns[key]).all(axis=1))
            if len(bad):
                raise AnnotationError(
                    f"Episode {episode}: the calibration `{key}` is NaN or infinite at {len(bad)} of "
                    f"{len(columns[key])} frames ({_frame_list(bad)}), so camera {self.name!r} cannot be "
                    "projected there. Repair those values, or for a fixed camera pass --calibration=calib.yaml "
                    "(it replaces the columns)."
                )

    def at(self, columns: dict[str, np.ndarray], t: int) -> CameraCalibration:
        """Calibration at step ``t`` of an episode's ``columns`` (which describe the stored image and are
        used as is), or the fixed one; :meth:`check_finite` first."""
        if self.fixed is not None:
            return self.fixed
        intrinsics = columns[schema.intrinsics_key(self.name)][t]
        extrinsics = columns[schema.extrinsics_key(self.name)][t]
        return CameraCalibration.from_flat(intrinsics, extrinsics, self.width, self.height)


def image_hw(feature: dict) -> tuple[int, int]:
    """(height, width) of an image / video feature (channel-last, or channel-first by its names)."""
    shape = tuple(int(s) for s in feature["shape"])
    names = list(feature.get("names") or [])
    if (
        names
        and names[0] in ("channels", "channel", "c")
        or (len(shape) == 3 and shape[0] in (1, 3) and shape[2] not in (1, 3))
    ):
        return shape[1], shape[2]
    return shape[0], shape[1]


def _matrix(value: Any, rows: int, cols: int, what: str) -> np.ndarray:
    """``value`` as a finite (rows, cols) float64 matrix (a 4x4 given for a 3x4: its top 3 rows), else
    an :class:`AnnotationError` that says what is wrong."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{what}: expected {rows}x{cols} numbers, got {value!r}.") from None
    if array.size == 16 and (rows, cols) == (3, 4):
        array = array.reshape(4, 4)[:3]
    if array.size != rows * cols:
        raise AnnotationError(f"{what}: expected {rows}x{cols} numbers, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise AnnotationError(f"{what} holds NaN or infinite values: {array.reshape(rows, cols).tolist()}.")
    return array.reshape(rows, cols)


def _image_size(spec: dict, key: str, where: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AnnotationError(f"{where}: {key} must be a positive whole number of pixels, got {value!r}.")
    return value


def load_calibration_yaml(path: str | Path) -> dict[str, dict]:
    """Fixed camera calibrations from a YAML file (format: :data:`CALIBRATION_YAML_HELP`).

    Returns ``{camera: {"K": (3, 3), "extrinsics": (3, 4) world-to-camera, "width": int | None,
    "height": int | None, "flip_u": bool, "flip_v": bool}}``.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise AnnotationError(
            f"--calibration={str(path)!r} is neither 'dataset' nor an existing YAML file. A calibration "
            f"file looks like:\n{CALIBRATION_YAML_HELP}"
        )
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise AnnotationError(
            f"{path} is not valid YAML{line}: {problem}. A calibration file looks like:\n{CALIBRATION_YAML_HELP}"
        ) from None
    cameras = data.get("cameras", data) if isinstance(data, dict) else None
    if not isinstance(cameras, dict) or not cameras:
        raise AnnotationError(f"{path}: no cameras found. Expected:\n{CALIBRATION_YAML_HELP}")
    out = {}
    for name, spec in cameras.items():
        where = f"{path}: camera {name!r}"
        if (
            not isinstance(spec, dict)
            or ("K" not in spec and "intrinsics" not in spec)
            or "extrinsics" not in spec
        ):
            raise AnnotationError(
                f"{where} needs 'K' (or 'intrinsics') and 'extrinsics'. Expected:\n{CALIBRATION_YAML_HELP}"
            )
        K = _matrix(spec.get("K", spec.get("intrinsics")), 3, 3, f"{where} K")
        ext = _matrix(spec["extrinsics"], 3, 4, f"{where} extrinsics (3x4 or 4x4)")
        convention = str(spec.get("convention", "world_to_camera"))
        if convention == "camera_to_world":
            rotation = ext[:, :3].T
            ext = np.concatenate([rotation, -(rotation @ ext[:, 3])[:, None]], axis=1)
        elif convention != "world_to_camera":
            raise AnnotationError(
                f"{where}: convention must be world_to_camera or camera_to_world, got {convention!r}."
            )
        flip = bool(spec.get("flip", False))
        out[str(name)] = {
            "K": K,
            "extrinsics": ext,
            "width": _image_size(spec, "width", where),
            "height": _image_size(spec, "height", where),
            "flip_u": bool(spec.get("flip_u", flip)),
            "flip_v": bool(spec.get("flip_v", flip)),
        }
    return out


def _rescale_intrinsics(K: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """K of an image resized from ``src_hw`` to ``dst_hw`` (pixel centres on integers, as in asvm)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    K = K.copy()
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def _select_cameras(cfg: AnnotateConfig, features: dict) -> tuple[list[str], str]:
    available = [k.removeprefix(schema.IMAGES_PREFIX) for k in features if k.startswith(schema.IMAGES_PREFIX)]
    if not available:
        raise AnnotationError(
            f"The dataset has no camera (no {schema.IMAGES_PREFIX}<cam> feature): value maps need images."
        )
    cameras = _parse_list(cfg.cameras) or available
    missing = [c for c in cameras if c not in available]
    if missing:
        raise AnnotationError(
            f"Camera(s) {missing} given in --cameras are not in the dataset, which has cameras {available}."
        )
    head = cfg.head_camera
    if head is None:
        recorded = schema.head_camera(features)
        named = [c for c in cameras if any(tag in c.lower() for tag in ("head", "high", "top"))]
        head = recorded if recorded in cameras else (named[0] if named else cameras[0])
    elif head not in cameras:
        raise AnnotationError(
            f"--head_camera={head!r} is not among the annotated cameras {cameras} (dataset cameras: {available})."
        )
    return [head] + [c for c in cameras if c != head], head


def _setup_cameras(cfg: AnnotateConfig, features: dict, cameras: list[str]) -> list[_Camera]:
    from_yaml = {} if cfg.calibration == "dataset" else load_calibration_yaml(cfg.calibration)
    result, missing = [], []
    for name in cameras:
        ft = features[schema.image_key(name)]
        height, width = image_hw(ft)
        camera = _Camera(name, height, width, "video" if ft["dtype"] == "video" else "image")
        if name in from_yaml:
            spec = from_yaml[name]
            K = spec["K"]
            if spec["width"] and spec["height"] and (spec["height"], spec["width"]) != (height, width):
                logger.info(
                    "Camera %s: calibration for %dx%d, images %dx%d: intrinsics rescaled.",
                    name,
                    spec["width"],
                    spec["height"],
                    width,
                    height,
                )
                K = _rescale_intrinsics(K, (spec["height"], spec["width"]), (height, width))
            camera.fixed = CameraCalibration(
                K, spec["extrinsics"], width, height, flip_u=spec["flip_u"], flip_v=spec["flip_v"]
            )
            camera.origin = f"fixed, from `{Path(cfg.calibration).name}`"
        elif schema.intrinsics_key(name) in features and schema.extrinsics_key(name) in features:
            camera.origin = (
                f"per step, from `{schema.intrinsics_key(name)}` / `{schema.extrinsics_key(name)}`"
            )
        else:
            missing.append(name)
        result.append(camera)
    if missing:
        yaml_note = (
            f" and the calibration file {cfg.calibration!r} does not list them"
            if cfg.calibration != "dataset"
            else " and no --calibration=<file.yaml> was given"
        )
        raise AnnotationError(
            f"No calibration for camera(s) {missing}: the dataset has no "
            f"{' / '.join(repr(schema.intrinsics_key(c)) + ', ' + repr(schema.extrinsics_key(c)) for c in missing)} "
            f"columns{yaml_note}. Moving (wrist) cameras need those per-step columns (K as 9 floats, "
            "world-to-camera [R|t] as 12, row-major); for fixed cameras pass --calibration=calib.yaml "
            f"with:\n{CALIBRATION_YAML_HELP}"
        )
    return result


# ── Annotation ──────────────────────────────────────────────────────────


def _resolve_root(root: str | None, repo_id: str) -> Path:
    from lerobot.utils.constants import HF_LEROBOT_HOME

    return Path(root) if root else Path(HF_LEROBOT_HOME) / repo_id


def _is_within(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _output_features(src_features: dict, cameras: list[_Camera], head: str) -> tuple[dict, list[str]]:
    """Features of the output: the source's (minus LeRobot's defaults and replaced maps) + value maps."""
    from lerobot.utils.constants import DEFAULT_FEATURES

    replaced = [schema.value_map_key(c.name) for c in cameras if schema.value_map_key(c.name) in src_features]
    features = {}
    for key, ft in src_features.items():
        if key in DEFAULT_FEATURES or key in replaced:
            continue
        ft = copy.deepcopy(ft)
        ft["shape"] = tuple(ft["shape"])
        if ft["dtype"] == "video":
            # Drop what LeRobot probed from the source's files; it probes the new ones.
            info = {k: v for k, v in (ft.get("info") or {}).items() if not k.startswith(("video.", "audio."))}
            info.pop("has_audio", None)
            ft["info"] = info or None
        features[key] = ft
    for cam in cameras:
        for key, ft in schema.value_map_features([cam.name], cam.height, cam.width, head_camera=head).items():
            features[key] = {**ft, "dtype": cam.dtype}
    return features, replaced


def _columns(dataset: LeRobotDataset, keys: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
    """Numeric columns of frames [start, stop) as (T, D) float64 arrays."""
    rows = dataset.hf_dataset.select_columns(keys)[start:stop]
    return {k: np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in rows[k]]) for k in keys}


def _decode(
    dataset: LeRobotDataset, key: str, episode: int, timestamps: np.ndarray, backend: str
) -> np.ndarray:
    """Frames of a video feature at episode-relative ``timestamps``: (N, H, W, 3) uint8."""
    from lerobot.datasets.video_utils import decode_video_frames

    meta = dataset.meta
    start = meta.episodes[episode][f"videos/{key}/from_timestamp"]
    path = dataset.root / meta.get_video_file_path(episode, key)
    frames = decode_video_frames(
        path, [float(start + ts) for ts in timestamps], dataset.tolerance_s, backend, return_uint8=True
    )
    return frames.permute(0, 2, 3, 1).numpy()


def _to_uint8_hwc(value) -> np.ndarray:
    """An image column value (CHW float in [0, 1] tensor, as LeRobot loads it) -> HWC uint8."""
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    return array


def _frame_value(ft: dict, value):
    dtype = ft["dtype"]
    if dtype in ("string", "language"):
        return value
    return np.asarray(value).astype(dtype).reshape(ft["shape"])


def _grey3(value_map: np.ndarray) -> np.ndarray:
    grey = np.round(np.clip(value_map, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def annotate_dataset(cfg: AnnotateConfig) -> AnnotationSummary:
    """Write ``cfg.output_repo_id`` (at ``cfg.output_root``): the source dataset plus value maps.

    Returns what was done (also written in the output's ``README.md``). Raises
    :class:`AnnotationError` on bad inputs, before anything is written.
    """
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.utils.import_utils import get_safe_default_video_backend
    from tqdm import tqdm

    from lerobot_aim.data.synthetic import check_value_map_info, quiet_libav

    started = time.perf_counter()
    src_root = _resolve_root(cfg.root, cfg.repo_id)
    out_root = _resolve_root(cfg.output_root, cfg.output_repo_id)
    if cfg.root is not None and not src_root.is_dir():
        raise AnnotationError(f"--root={cfg.root!r} does not exist.")
    if src_root.exists() and (_is_within(out_root, src_root) or _is_within(src_root, out_root)):
        raise AnnotationError(
            f"The output {out_root} overlaps the source dataset {src_root}: the source is never modified; "
            "choose another --output_root / --output_repo_id."
        )
    clean_staging(out_root)
    if out_root.exists() and not cfg.overwrite:
        raise AnnotationError(
            f"The output {out_root} already exists. Choose another --output_repo_id / --output_root, or "
            "pass --overwrite=true to replace it."
        )
    if (
        out_root.exists()
        and not is_lerobot_dataset(out_root)
        and (out_root.is_file() or any(out_root.iterdir()))
    ):
        raise AnnotationError(
            f"--overwrite=true replaces only a LeRobot dataset, and {out_root} is not one (no meta/info.json): "
            "it is left as it is. Choose another --output_root / --output_repo_id, or move that folder away."
        )

    backend = cfg.video_backend or get_safe_default_video_backend()
    src = LeRobotDataset(cfg.repo_id, root=cfg.root, video_backend=backend)
    features, legacy_flips = schema.drop_legacy_flips(src.meta.features)
    if legacy_flips:
        logger.warning(
            "Camera(s) %s carry the flip flags %s of lerobot-aim-collect's schema 1: their calibration columns "
            "already describe the stored images, so the flags are ignored (and not copied).",
            legacy_flips,
            list(schema.LEGACY_FLIP_INFO),
        )
    if src.meta.depth_keys:
        raise AnnotationError(
            f"Depth features {src.meta.depth_keys} are not supported yet; drop them first with "
            "`lerobot-edit-dataset --operation.type=remove_feature --operation.feature_names=[...]`."
        )
    cam_names, head = _select_cameras(cfg, features)
    cameras = _setup_cameras(cfg, features, cam_names)
    reader = _SignalReader(cfg, features)
    out_features, replaced = _output_features(features, cameras, head)
    if replaced:
        logger.warning("The source already has value maps %s: they are replaced.", replaced)
    use_videos = any(ft["dtype"] == "video" for ft in out_features.values())
    keys = _Keys(
        signals=reader.keys,
        calibration=[
            k
            for c in cameras
            if c.per_step
            for k in (schema.intrinsics_key(c.name), schema.extrinsics_key(c.name))
        ],
        videos=[k for k, ft in features.items() if ft["dtype"] == "video" and k in out_features],
        images=[k for k, ft in features.items() if ft["dtype"] == "image" and k in out_features],
        maps=[schema.value_map_key(c.name) for c in cameras],
        features=out_features,
    )

    summary = AnnotationSummary(
        source_repo_id=cfg.repo_id,
        output_repo_id=cfg.output_repo_id,
        source=cfg.source,
        cameras=[c.name for c in cameras],
        head_camera=head,
        image_sizes={c.name: (c.height, c.width) for c in cameras},
        calibration={c.name: c.origin for c in cameras},
        radius=cfg.radius,
        signals=list(reader.descriptions),
        video_codec=cfg.vcodec if use_videos else None,
    )

    _check_finite_inputs(src, reader, cameras, keys)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = staging_path(out_root, ANNOTATE_STAGING)
    rgb_encoder = (
        RGBEncoderConfig(vcodec=cfg.vcodec, crf=cfg.crf, g=2, preset=cfg.preset) if use_videos else None
    )
    dst = None
    try:
        with quiet_libav():
            dst = LeRobotDataset.create(
                repo_id=cfg.output_repo_id,
                fps=src.meta.fps,
                features=out_features,
                root=tmp_root,
                robot_type=src.meta.robot_type,
                use_videos=use_videos,
                rgb_encoder=rgb_encoder,
                image_writer_threads=cfg.image_writer_threads,
                video_backend=backend,
            )
            for episode in tqdm(range(src.meta.total_episodes), desc="Annotating", unit="episode"):
                _annotate_episode(cfg, src, dst, episode, cameras, reader, keys, summary, tmp_root, backend)
            dst.finalize()
        check_value_map_info(tmp_root, out_features)
        leftover = tmp_root / "images"
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        summary.seconds = time.perf_counter() - started
        write_dataset_card(tmp_root, summary, license=cfg.license)
        publish(tmp_root, out_root)
    except BaseException:
        if dst is not None and dst.writer is not None:
            with contextlib.suppress(Exception):
                dst.writer.stop_image_writer()
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - started
    logger.info(
        "Wrote %s at %s: %d episodes, %d frames, events %s, in %.1f s.",
        cfg.output_repo_id,
        out_root,
        summary.num_episodes,
        summary.num_frames,
        summary.event_counts(),
        summary.seconds,
    )
    if summary.episodes_without_events:
        logger.warning(
            "%d episode(s) have no interaction event (blank value maps): %s",
            len(summary.episodes_without_events),
            summary.episodes_without_events[:20],
        )
    if cfg.push_to_hub:
        out = LeRobotDataset(cfg.output_repo_id, root=out_root)
        out.push_to_hub(
            tags=["AIM", "value-maps", "ASVM"],
            license=cfg.license,
            private=cfg.private,
            dataset_description=value_map_description(summary),
        )
    return summary


@dataclass
class _Keys:
    """Which source features play which part, fixed for the whole dataset."""

    signals: list[str]  # numeric features the events come from
    calibration: list[str]  # per-step calibration columns of the annotated cameras
    videos: list[str]  # video features, decoded and re-encoded
    images: list[str]  # image features, copied as uint8 images
    maps: list[str]  # the value maps made here
    features: dict  # the output's features

    @property
    def copied(self) -> list[str]:
        """Features read from the parquet rows (every feature of the source but its videos)."""
        return [k for k in self.features if k not in self.videos and k not in self.maps]


def _check_finite_inputs(
    src: LeRobotDataset, reader: _SignalReader, cameras: list[_Camera], keys: _Keys
) -> None:
    """Refuse, before anything is written, a dataset whose signals or calibration hold NaN or inf."""
    for episode in range(src.meta.total_episodes):
        ep_meta = src.meta.episodes[episode]
        start, stop = int(ep_meta["dataset_from_index"]), int(ep_meta["dataset_to_index"])
        columns = _columns(src, [*keys.signals, *keys.calibration], start, stop)
        reader.check_finite(columns, episode)
        for cam in cameras:
            cam.check_finite(columns, episode)


def _annotate_episode(
    cfg: AnnotateConfig,
    src: LeRobotDataset,
    dst: LeRobotDataset,
    episode: int,
    cameras: list[_Camera],
    reader: _SignalReader,
    keys: _Keys,
    summary: AnnotationSummary,
    out_root: Path,
    backend: str,
) -> None:
    """Copy one episode into ``dst`` with its value maps (and write its contact sheet)."""
    ep_meta = src.meta.episodes[episode]
    start, stop = int(ep_meta["dataset_from_index"]), int(ep_meta["dataset_to_index"])
    num_steps = stop - start
    columns = _columns(src, [*keys.signals, *keys.calibration, "timestamp"], start, stop)
    events = reader.events(reader.read(columns), src.meta.fps)
    for event in events:
        summary.events[(event.arm, event.kind)] += 1
    if not events:
        summary.episodes_without_events.append(episode)
    targets = next_interaction_targets(num_steps, events, after_last=cfg.after_last)
    sheet = _SheetCollector(cfg, cameras, num_steps) if cfg.contact_sheets else None
    timestamps = columns["timestamp"][:, 0]
    copied = [*keys.copied, "task_index"]
    for chunk_start in range(0, num_steps, DECODE_CHUNK):
        chunk = range(chunk_start, min(chunk_start + DECODE_CHUNK, num_steps))
        rows = src.hf_dataset.select_columns(copied)[start + chunk.start : start + chunk.stop]
        videos = {
            key: _decode(src, key, episode, timestamps[chunk.start : chunk.stop], backend)
            for key in keys.videos
        }
        for i, t in enumerate(chunk):
            frame: dict[str, Any] = {"task": src.meta.tasks.iloc[int(rows["task_index"][i])].name}
            for key in keys.copied:
                value = rows[key][i]
                frame[key] = (
                    _to_uint8_hwc(value) if key in keys.images else _frame_value(keys.features[key], value)
                )
            for key in keys.videos:
                frame[key] = videos[key][i]
            for cam in cameras:
                calib = cam.at(columns, t)
                value_map = render_value_map(targets[t], calib, radius=cfg.radius)
                frame[schema.value_map_key(cam.name)] = _grey3(value_map)
                if sheet is not None:
                    sheet.add(cam.name, t, frame[schema.image_key(cam.name)], value_map, targets[t], calib)
            dst.add_frame(frame)
    # Encode in this process: a process pool per episode costs more than it saves on small episodes.
    dst.save_episode(parallel_encoding=False)
    if sheet is not None:
        path = sheet.write(out_root, episode)
        summary.contact_sheets.append(path.relative_to(out_root).as_posix())
    summary.num_episodes += 1
    summary.num_frames += num_steps


class _SheetCollector:
    """Frames, value maps and projected targets at evenly spaced steps, for one episode's contact sheet."""

    def __init__(self, cfg: AnnotateConfig, cameras: list[_Camera], num_steps: int):
        self.cfg = cfg
        self.cameras = cameras
        self.every = max(1, math.ceil(num_steps / cfg.contact_sheet_frames))
        self.data: dict[str, list[tuple]] = {c.name: [] for c in cameras}

    def add(self, camera: str, t: int, frame, value_map, targets, calib) -> None:
        if t % self.every:
            return
        if len(targets):
            uv, _ = calib.project(targets)
        else:
            uv = np.zeros((0, 2))
        label = f"{camera} t={t}" if t == 0 else f"t={t}"
        self.data[camera].append((_to_uint8_hwc(frame), value_map, uv, label))

    def write(self, root: Path, episode: int) -> Path:
        from lerobot_aim.viz.contact_sheet import contact_sheet, stack_sheets

        sheets = []
        for cam in self.cameras:
            frames, maps, points, labels = zip(*self.data[cam.name], strict=True)
            sheets.append(
                contact_sheet(
                    np.stack(frames),
                    np.stack(maps),
                    points_uv=list(points),
                    labels=list(labels),
                    every=1,
                    columns=self.cfg.contact_sheet_frames,
                    scale=self.cfg.contact_sheet_scale,
                )
            )
        path = root / CONTACT_SHEET_DIR / f"episode_{episode:04d}.png"
        stack_sheets(sheets, path=path)
        return path


def main() -> None:
    """Console entry point (``lerobot-aim-annotate``)."""
    from lerobot.configs import parser
    from lerobot.utils.utils import init_logging

    init_logging()

    def run(cfg):
        return annotate_dataset(cfg)

    # parser.wrap reads the config class from the annotation (a string under `from __future__`).
    run.__annotations__ = {"cfg": AnnotateConfig}
    try:
        parser.wrap()(run)()
    except Exception as error:
        # draccus wraps errors of the config's __post_init__ in its ParsingError.
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, AnnotationError):
            cause = cause.__cause__
        if cause is None:
            raise
        print(f"{schema.ANNOTATE_COMMAND}: error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
