"""The value-map dataset schema: the one place that names AIM's dataset features.

A LeRobotDataset that AIM trains on holds, per camera ``<cam>`` and step:
- ``observation.images.<cam>``: the camera frame (video feature, as LeRobot records it);
- ``observation.value_maps.<cam>``: the value map of the same camera and step, same height and
  width, a 3-channel video (grey replicated), values in [0, 1];
- optionally ``observation.camera.<cam>.intrinsics`` (3x3, flattened row-major, 9 floats) and
  ``observation.camera.<cam>.extrinsics`` (world-to-camera [R|t], OpenCV convention, 12 floats):
  the calibration of the image *as stored*, used as is (a simulator camera that renders upside down
  and is stored rotated has that rotation folded into its K and [R|t]);
- ``observation.state``, ``action`` and the task string, as LeRobot has them.

``info.json`` records the schema version and the head camera inside each value-map feature's
``info`` (LeRobot keeps that dict, and drops unknown top-level keys). Data prepared for the public
AIM code (``observation.masks.<cam>``) is accepted through :data:`MASK_ALIAS_PREFIX`.

Schema versions:
- 2: calibration columns describe the stored image and are used as is.
- 1 (refused for training): ``lerobot-aim-collect`` stored folded calibration columns and also
  flip flags (:data:`LEGACY_FLIP_INFO`), and applied the flip a second time: its head-camera maps
  (MetaWorld's ``corner2``) are rotated 180 degrees. ``lerobot-aim-annotate --source=contacts``
  re-renders them right (it ignores those flags).
"""

from __future__ import annotations

import numpy as np
from lerobot.utils.constants import OBS_IMAGES

SCHEMA_VERSION = 2
SCHEMA_INFO = "aim.value_map_schema"
HEAD_CAMERA_INFO = "aim.head_camera"
IMAGES_PREFIX = OBS_IMAGES + "."  # LeRobot's camera features: observation.images.<cam>
VALUE_MAPS_PREFIX = "observation.value_maps."
MASK_ALIAS_PREFIX = "observation.masks."
CAMERA_PREFIX = "observation.camera."
ANNOTATE_COMMAND = "lerobot-aim-annotate"


def image_key(camera: str) -> str:
    return IMAGES_PREFIX + camera


def value_map_key(camera: str) -> str:
    return VALUE_MAPS_PREFIX + camera


def intrinsics_key(camera: str) -> str:
    return f"{CAMERA_PREFIX}{camera}.intrinsics"


def extrinsics_key(camera: str) -> str:
    return f"{CAMERA_PREFIX}{camera}.extrinsics"


def value_map_frame(value_map: np.ndarray) -> np.ndarray:
    """A value map (H, W) in [0, 1] as the dataset stores it: (H, W, 3) uint8, grey in 3 channels."""
    grey = np.round(np.clip(value_map, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def image_cameras(features: dict) -> list[str]:
    """Cameras with an image feature (``observation.images.<cam>``), in feature order."""
    return [k.removeprefix(IMAGES_PREFIX) for k in features if k.startswith(IMAGES_PREFIX)]


def value_map_features(cameras: list[str], height: int, width: int, head_camera: str | None = None) -> dict:
    """LeRobot feature specs of the value maps of ``cameras`` (video, 3 channels, HWC)."""
    head = head_camera or cameras[0]
    return {
        value_map_key(cam): {
            "dtype": "video",
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
            "info": {SCHEMA_INFO: SCHEMA_VERSION, HEAD_CAMERA_INFO: head},
        }
        for cam in cameras
    }


def calibration_features(cameras: list[str]) -> dict:
    """LeRobot feature specs of per-step camera calibration (flattened K and [R|t])."""
    features = {}
    for cam in cameras:
        features[intrinsics_key(cam)] = {"dtype": "float32", "shape": (9,), "names": None}
        features[extrinsics_key(cam)] = {"dtype": "float32", "shape": (12,), "names": None}
    return features


def dataset_cameras(features: dict) -> list[str]:
    """Cameras with images in a dataset's features, the head camera first when recorded."""
    cams = image_cameras(features)
    head = head_camera(features)
    return sorted(cams, key=lambda c: (c != head, cams.index(c)))


def head_camera(features: dict) -> str | None:
    for key, ft in features.items():
        if key.startswith(VALUE_MAPS_PREFIX):
            head = (ft.get("info") or {}).get(HEAD_CAMERA_INFO)
            if head:
                return head
    return None


def value_map_schema(features: dict, camera: str) -> int | None:
    """Schema version recorded in the info of the camera's value-map feature (None if unrecorded)."""
    version = ((features.get(value_map_key(camera)) or {}).get("info") or {}).get(SCHEMA_INFO)
    return None if version is None else int(version)


def check_value_maps(features: dict, cameras: list[str], source: str = "the dataset") -> None:
    """Refuse, with what to do, a dataset that lacks images or value maps of the configured cameras,
    or whose value maps were written under an older schema (wrong head-camera maps)."""
    have_images = set(image_cameras(features))
    missing = [c for c in cameras if c not in have_images]
    if missing:
        raise ValueError(
            f"Camera(s) {missing} of --policy.cameras are not in {source}, which has cameras "
            f"{sorted(have_images)}. Set --policy.cameras to cameras it has (head first)."
        )
    aliases = [c for c in cameras if MASK_ALIAS_PREFIX + c in features and value_map_key(c) not in features]
    if aliases:
        rename = ",".join(f'"{MASK_ALIAS_PREFIX}{c}":"{value_map_key(c)}"' for c in aliases)
        raise ValueError(
            f"{source} stores value maps as `{MASK_ALIAS_PREFIX}<cam>` (the public AIM code's name). Map them "
            f"to AIM's keys with --rename_map='{{{rename}}}'."
        )
    no_maps = [c for c in cameras if value_map_key(c) not in features]
    if no_maps:
        raise ValueError(
            f"{source} has no value maps for camera(s) {no_maps} (expected features "
            f"{[value_map_key(c) for c in no_maps]}). Add them with `{ANNOTATE_COMMAND} --repo_id=<dataset> "
            "--output_repo_id=<new dataset>` (from contacts or from end-effector poses), then train on the new dataset."
        )
    old = {c: v for c in cameras if (v := value_map_schema(features, c)) is not None and v < SCHEMA_VERSION}
    if old:
        raise ValueError(
            f"{source} holds value maps of schema {sorted(set(old.values()))} (cameras {sorted(old)}); this "
            f"version of AIM needs schema {SCHEMA_VERSION}. Before schema 2, lerobot-aim-collect applied the "
            "head camera's image flip twice, so its head-camera maps are rotated 180 degrees. Re-render the "
            f"maps with `{ANNOTATE_COMMAND} --repo_id=<dataset> --root=<its folder> --output_repo_id=<new "
            "dataset> --source=contacts` (a dataset annotated from end-effector poses: rerun its "
            "--source=poses command on it), or collect it again with `lerobot-aim-collect`; then train on "
            "the new dataset."
        )


# ── Raw annotation signals ──────────────────────────────────────────────
# What a value map is made of, recorded per step next to the images by a collector (simulator or
# real arm) and read by `lerobot-aim-annotate` (`lerobot_aim.data.annotate`). All positions are in
# the world frame of the camera extrinsics, metres. Arms are ordered as in the robot's state
# (RoboTwin: left, right). Multi-arm vectors are arm-major: arm 0's block, then arm 1's.
# Padding is NaN: a point with any NaN coordinate is "no point".

EE_POSITION = "observation.ee_position"
"""float32 (3 * n_arms,): tool-centre point of each arm, ``[x0, y0, z0, x1, y1, z1, ...]``.

The point between the gripper pads (where the gripper grasps), not the wrist flange: grasp and place
regions of the ``poses`` source are this point at the step the gripper closes / opens."""

GRIPPER_CLOSED = "observation.gripper_closed"
"""float32 (n_arms,): 1 while the arm's gripper is closed or commanded to close, 0 while open.

Values in between are thresholded by the annotator (``--gripper_closed_threshold``, default 0.5)."""

PAD_CONTACT = "annotation.pad_contact"
"""float32 (n_arms * P,): 1 where pad p of an arm's gripper touches the target object, else 0.

P pads per arm, arm-major (``[arm0_pad0, arm0_pad1, arm1_pad0, ...]``; P = 2 for a parallel gripper).
A collector that only knows "firmly held" may record P = 1 per arm (1 = every pad touches). A grasp
is the first step at which the gripper is closing and all of an arm's pads touch the object; the
release is the first later step at which no pad touches it any more."""

OBJECT_POSITION = "annotation.object_position"
"""float32 (3,) or (3 * n_arms,): centre of mass of the target object (one shared object), or of
the object each arm handles (arm-major). Its speed decides when a released object has settled
(the place event)."""

CONTACT_POINTS = "annotation.contact_points"
"""float32 (n_arms * K * 3,): up to K gripper-object contact points per arm, arm-major, NaN-padded.

Arm a's points are ``values.reshape(n_arms, K, 3)[a]`` (one arm: ``reshape(K, 3)``). The grasp
region is the points at the grasp step; tasks without a grasp use the first step with a contact.
Optional: without it the grasp region is the object's centre of mass."""

SUPPORT_POINTS = "annotation.support_points"
"""float32 (n_arms * K * 3,): up to K contact points between the object an arm handles and its support
(table, target), arm-major, NaN-padded (same layout as :data:`CONTACT_POINTS`; a shared object is
repeated in every arm's block). The place region is the points at the place step. Optional: without
it the place region is the object's centre lowered by ``--object_half_height``."""

LEGACY_FLIP_INFO = ("aim.flip_u", "aim.flip_v")
"""Keys that ``lerobot-aim-collect`` of schema 1 wrote into the ``info`` of
``observation.camera.<cam>.intrinsics`` although the columns already describe the stored image.
They are ignored when reading and dropped when writing (:func:`drop_legacy_flips`)."""


def annotation_signal_features(
    n_arms: int = 1,
    pads_per_arm: int = 2,
    max_contact_points: int = 8,
    per_arm_object: bool = False,
    with_ee_position: bool = True,
) -> dict:
    """LeRobot feature specs of the raw annotation signals, for a collector to record.

    ``GRIPPER_CLOSED``, ``PAD_CONTACT``, ``OBJECT_POSITION`` (one shared object unless
    ``per_arm_object``), ``CONTACT_POINTS`` and ``SUPPORT_POINTS`` (``max_contact_points`` per arm),
    and ``EE_POSITION`` when ``with_ee_position``. Every feature is float32.
    """
    arms = [f"arm{a}" for a in range(n_arms)]
    xyz = ("x", "y", "z")
    features = {
        GRIPPER_CLOSED: {"dtype": "float32", "shape": (n_arms,), "names": arms},
        PAD_CONTACT: {
            "dtype": "float32",
            "shape": (n_arms * pads_per_arm,),
            "names": [f"{arm}_pad{p}" for arm in arms for p in range(pads_per_arm)],
        },
        OBJECT_POSITION: {
            "dtype": "float32",
            "shape": (3 * n_arms if per_arm_object else 3,),
            "names": [f"{arm}_{c}" for arm in arms for c in xyz] if per_arm_object else list(xyz),
        },
        CONTACT_POINTS: {"dtype": "float32", "shape": (n_arms * max_contact_points * 3,), "names": None},
        SUPPORT_POINTS: {"dtype": "float32", "shape": (n_arms * max_contact_points * 3,), "names": None},
    }
    if with_ee_position:
        features[EE_POSITION] = {
            "dtype": "float32",
            "shape": (3 * n_arms,),
            "names": [f"{arm}_{c}" for arm in arms for c in xyz],
        }
    return features


def pad_points(points_per_arm, max_points: int):
    """Flat NaN-padded float32 vector in the :data:`CONTACT_POINTS` / :data:`SUPPORT_POINTS` layout.

    ``points_per_arm``: one (N_a, 3) array per arm (a single arm: ``[points]``); points beyond
    ``max_points`` per arm are dropped. Returns ``(len(points_per_arm) * max_points * 3,)``.
    """
    out = np.full((len(points_per_arm), max_points, 3), np.nan, dtype=np.float32)
    for arm, points in enumerate(points_per_arm):
        points = np.asarray(points, dtype=np.float32).reshape(-1, 3)[:max_points]
        out[arm, : len(points)] = points
    return out.reshape(-1)


def drop_legacy_flips(features: dict) -> tuple[dict, list[str]]:
    """``features`` without the :data:`LEGACY_FLIP_INFO` keys, and the cameras that had them.

    Returns a new dict (``features`` is not modified); an intrinsics feature left with an empty
    ``info`` gets ``info=None``, as LeRobot writes features without one.
    """
    out, cameras = {}, []
    for key, ft in features.items():
        info = ft.get("info") or {}
        if (
            key.startswith(CAMERA_PREFIX)
            and key.endswith(".intrinsics")
            and any(k in info for k in LEGACY_FLIP_INFO)
        ):
            cameras.append(key.removeprefix(CAMERA_PREFIX).removesuffix(".intrinsics"))
            kept = {k: v for k, v in info.items() if k not in LEGACY_FLIP_INFO}
            ft = {**ft, "info": kept or None}
        out[key] = ft
    return out, cameras
