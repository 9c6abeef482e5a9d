"""Camera calibration for ``lerobot-aim-annotate``: per-step dataset columns or a YAML file of fixed cameras.

Per-step columns (``observation.camera.<cam>.intrinsics`` / ``.extrinsics``, :mod:`lerobot_aim.data.schema`)
describe the image as stored and are used as is; a YAML file (format: :data:`CALIBRATION_YAML_HELP`)
calibrates fixed cameras, its K rescaled when the dataset stores another image size. Every number is
checked to be finite where it enters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import schema
from lerobot_aim.data.configs import AnnotateConfig
from lerobot_aim.data.errors import AnnotationError
from lerobot_aim.data.signals import frame_list

logger = logging.getLogger(__name__)

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


@dataclass
class Camera:
    """One annotated camera: its image size and storage, and where its calibration comes from."""

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
                    f"{len(columns[key])} frames ({frame_list(bad)}), so camera {self.name!r} cannot be "
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


def rescale_intrinsics(K: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """K of an image resized from ``src_hw`` to ``dst_hw`` (pixel centres on integers, as in asvm)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    K = K.copy()
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def select_cameras(cfg: AnnotateConfig, features: dict) -> tuple[list[str], str]:
    available = schema.image_cameras(features)
    if not available:
        raise AnnotationError(
            f"The dataset has no camera (no {schema.IMAGES_PREFIX}<cam> feature): value maps need images."
        )
    cameras = list(cfg.cameras or []) or available
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


def setup_cameras(cfg: AnnotateConfig, features: dict, cameras: list[str]) -> list[Camera]:
    from_yaml = {} if cfg.calibration == "dataset" else load_calibration_yaml(cfg.calibration)
    result, missing = [], []
    for name in cameras:
        ft = features[schema.image_key(name)]
        height, width = image_hw(ft)
        camera = Camera(name, height, width, "video" if ft["dtype"] == "video" else "image")
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
                K = rescale_intrinsics(K, (spec["height"], spec["width"]), (height, width))
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
