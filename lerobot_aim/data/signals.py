"""The signals value maps are made from, read from a dataset's numeric columns (``lerobot-aim-annotate``).

:class:`SignalReader` checks once which features play which part (``--source=poses``: end-effector
positions, read or computed by forward kinematics, and gripper states; ``--source=contacts``: pad
contacts, the object's position, contact and support points, see :mod:`lerobot_aim.data.schema`),
then turns an episode's columns into :class:`ArmSignals`, checks that they are finite, and finds the
episode's interaction events (:mod:`lerobot_aim.asvm.events`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lerobot_aim.asvm.events import InteractionEvent, detect_contact_events, detect_gripper_events
from lerobot_aim.data import schema
from lerobot_aim.data.configs import AnnotateConfig
from lerobot_aim.data.errors import AnnotationError


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
class ArmSignals:
    """Per-step arrays of one episode that the events are computed from."""

    gripper_closed: np.ndarray  # (T, A) bool
    ee_position: np.ndarray | None = None  # (T, A, 3)
    pads: list[np.ndarray] | None = None  # A x (T, P) bool
    object_position: list[np.ndarray] | None = None  # A x (T, 3)
    contact_points: list[list[np.ndarray]] | None = None  # A x T x (K_t, 3)
    support_points: list[list[np.ndarray]] | None = None  # A x T x (K_t, 3)


class SignalReader:
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
            " and --gripper_indices=<one dim per arm, e.g. [7,15]> (and --gripper_closed_is_low=true if low "
            "values mean closed)",
        )
        dim = _feature_dim(features, self.gripper_key)
        self.gripper_indices = list(cfg.gripper_indices) if cfg.gripper_indices else list(range(dim))
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
            " and --ee_slices=<the xyz dims of each arm, e.g. [[0,3],[8,11]]> (tool-centre point, world frame, metres), "
            "or compute them from joint positions with --fk_urdf=<robot.urdf> --fk_frame=<tool link> "
            "--joint_slices=<each arm's joint dims>",
        )
        dim = _feature_dim(features, self.ee_key)
        if cfg.ee_slices:
            self.ee_slices = [slice(start, stop) for start, stop in cfg.ee_slices]
        elif dim % 3 == 0:
            self.ee_slices = [slice(3 * a, 3 * a + 3) for a in range(dim // 3)]
        else:
            raise AnnotationError(
                f"{self.ee_key!r} has {dim} dims, not a multiple of 3: set --ee_slices to the xyz dims of "
                "each arm, e.g. --ee_slices=[[0,3],[8,11]]."
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
        slices = [slice(start, stop) for start, stop in cfg.joint_slices] if cfg.joint_slices else None
        try:
            self.fk = ChainFK(cfg.fk_urdf, cfg.fk_frame, slices, cfg.joint_units, cfg.fk_base_pose)
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
                    f"({frame_list(bad)}), so its value maps cannot be placed. Repair those values or drop the "
                    f"episode (`lerobot-edit-dataset --operation.type=delete_episodes "
                    f"--operation.episode_indices=[{episode}]`), then annotate again."
                )

    def read(self, columns: dict[str, np.ndarray]) -> ArmSignals:
        """Signals of one episode from its numeric columns ``{key: (T, D)}``."""
        cfg, arms = self.cfg, self.num_arms
        grip = columns[self.gripper_key][:, self.gripper_indices]
        with np.errstate(invalid="ignore"):
            closed = (
                grip < cfg.gripper_closed_threshold
                if cfg.gripper_closed_is_low
                else grip > cfg.gripper_closed_threshold
            )
        signals = ArmSignals(gripper_closed=closed)
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

    def events(self, signals: ArmSignals, fps: float) -> list[InteractionEvent]:
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


def frame_list(frames: np.ndarray) -> str:
    """``frames 3, 4, 5`` (the first 8, then ``...``), for messages."""
    shown = ", ".join(str(int(f)) for f in frames[:8])
    return f"frames {shown}{', ...' if len(frames) > 8 else ''}"
