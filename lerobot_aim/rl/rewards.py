"""Stage II rewards: sparse success plus the dense self-distillation reward of the frozen value head.

Paper Sec. 4.3.4: ``r_t = lambda_d r_t^dense + lambda_s r_t^sparse`` with ``r_t^dense = M_t(Pi(p_t))``:
the value map that the frozen value stream predicted for step t, read at the projection of the
end-effector position p_t into the image.

Here
- ``M_t`` is the decoded value-map canvas (T-pose packed, in [0, 1], channels averaged) of the chunk
  being executed, at the predicted frame that covers step t (:func:`value_frame_index`).
- ``Pi`` projects p_t (world frame, from the env's ``info``) with each camera's calibration
  (:class:`CameraCalibration`), maps the view pixel into the canvas (:func:`view_to_canvas`) and
  samples the map bilinearly there. ``views="max"`` takes the largest value over the views where p_t
  is visible (a wrist view often sees the gripper's target region when the head view is occluded);
  ``views="head"`` reads the head view only. A point that no view sees scores 0.
- The env's calibration and end-effector position are read by :func:`read_env_geometry`, the one
  adapter to point at another env's ``info`` layout. Without them the dense term is 0 (the trainer
  warns once and trains on the sparse reward).

Returns per episode aggregate the per-step rewards (:func:`episode_returns`) and advantages are
normalised within each group of G rollouts from the same initial state (:func:`group_advantages`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.asvm.packing import view_to_canvas

# Where the adapter looks for the end-effector (tool-centre point) position, first match wins.
EE_POS_KEYS = ("ee_pos", "tcp_pos", "eef_pos", "end_effector_pos", "hand_pos")
# Per-camera calibration dicts: info[<key>][<camera>] = {"intrinsics", "extrinsics", ...}.
CALIBRATION_KEYS = ("calibration", "cameras")
VIEW_MODES = ("max", "head")
DENSE_AGGREGATIONS = ("mean", "sum")


@dataclass
class EnvGeometry:
    """What the dense reward needs from one sub-env at one step."""

    ee_pos: np.ndarray  # (3,) world frame, metres
    cameras: dict[str, CameraCalibration]  # env camera name -> calibration (of the stored image)


def env_info_at(info: dict, index: int) -> dict:
    """Sub-env ``index``'s info from a gymnasium vector env's batched ``info``.

    A sub-env whose episode ended at this step was auto-reset (same-step autoreset): its own
    last-step info is under ``final_info`` and is returned instead of the reset info.
    """
    final = info.get("final_info")
    mask = info.get("_final_info")
    if isinstance(final, dict) and mask is not None and bool(np.asarray(mask)[index]):
        return _unbatch(final, index)
    if isinstance(final, list | tuple | np.ndarray) and len(final) > index and isinstance(final[index], dict):
        return final[index]  # gymnasium < 1.0
    return _unbatch(info, index)


def _unbatch(info: dict, index: int) -> dict:
    out = {}
    for key, value in info.items():
        if key.startswith("_") or key in ("final_info", "final_obs", "final_observation"):
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not bool(np.asarray(mask)[index]):
            continue
        if isinstance(value, dict):
            out[key] = _unbatch(value, index)
        else:
            try:
                out[key] = value[index]
            except (TypeError, IndexError, KeyError):
                out[key] = value
    return out


def read_env_geometry(info: dict, image_hw: dict[str, tuple[int, int]] | None = None) -> EnvGeometry | None:
    """THE adapter from one sub-env's ``info`` to :class:`EnvGeometry` (None when incomplete).

    Recognised layouts (per camera ``cam``, arrays row-major as :meth:`CameraCalibration.to_flat`):
    - ``info["calibration"][cam]`` or ``info["cameras"][cam]`` = {"intrinsics": (9,) or (3, 3),
      "extrinsics": (12,) or (3, 4), optional "width", "height", "flip_u", "flip_v" (or "flip")};
    - ``info["intrinsics"][cam]`` and ``info["extrinsics"][cam]``.
    The end-effector position is the first of ``EE_POS_KEYS`` present ((3,) world frame).
    Image width and height default to ``image_hw[cam]`` (the size of the stored observation).
    """
    ee = next((info[k] for k in EE_POS_KEYS if k in info), None)
    if ee is None:
        return None
    entries: dict[str, dict] = {}
    for key in CALIBRATION_KEYS:
        if isinstance(info.get(key), dict):
            entries.update({cam: e for cam, e in info[key].items() if isinstance(e, dict)})
    if isinstance(info.get("intrinsics"), dict) and isinstance(info.get("extrinsics"), dict):
        for cam, k in info["intrinsics"].items():
            if cam in info["extrinsics"]:
                entries.setdefault(cam, {"intrinsics": k, "extrinsics": info["extrinsics"][cam]})
    cameras = {}
    for cam, entry in entries.items():
        if "intrinsics" not in entry or "extrinsics" not in entry:
            continue
        height, width = (image_hw or {}).get(cam, (None, None))
        height = int(entry.get("height", height) or 0)
        width = int(entry.get("width", width) or 0)
        if height <= 0 or width <= 0:
            continue
        flip = bool(entry.get("flip", False))
        cameras[cam] = CameraCalibration.from_flat(
            np.asarray(entry["intrinsics"], dtype=np.float64).reshape(-1)[:9],
            np.asarray(entry["extrinsics"], dtype=np.float64).reshape(-1)[:12],
            width=width,
            height=height,
            flip_u=bool(entry.get("flip_u", flip)),
            flip_v=bool(entry.get("flip_v", flip)),
        )
    if not cameras:
        return None
    return EnvGeometry(np.asarray(ee, dtype=np.float64).reshape(-1)[:3], cameras)


def bilinear_sample(value_map: Tensor, uv: Tensor) -> Tensor:
    """Values of a map at pixel coordinates, bilinearly interpolated; 0 outside the map.

    Args:
        value_map: (H, W) or (C, H, W) (channels are averaged).
        uv: (N, 2) pixel coordinates (u = column, v = row; pixel centres on integers).
    Returns:
        (N,) float32 values.
    """
    if value_map.ndim == 3:
        value_map = value_map.float().mean(0)
    height, width = value_map.shape
    uv = uv.to(value_map.device, torch.float32).reshape(-1, 2)
    # align_corners=True puts pixel centres 0 and W-1 at -1 and +1.
    grid = torch.stack([uv[:, 0] / max(width - 1, 1) * 2 - 1, uv[:, 1] / max(height - 1, 1) * 2 - 1], dim=-1)
    out = F.grid_sample(
        value_map.float()[None, None],
        grid[None, None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out.reshape(-1)


def dense_reward(
    value_canvas: Tensor,
    geometry: EnvGeometry | None,
    cameras: list[str],
    head_hw: tuple[int, int],
    views: str = "max",
    camera_sources: dict[str, str] | None = None,
) -> float:
    """r^dense = M(Pi(p)): the value canvas read at the projected end-effector position.

    Args:
        value_canvas: (C, H_c, W_c) or (H_c, W_c) predicted value-map canvas in [0, 1] (T-pose packed).
        geometry: the env's calibration and end-effector position (None -> 0).
        cameras: the policy's cameras in T-pose order (view index = position; head first).
        head_hw: (H, W) of the head view on the canvas (the policy's ``image_size``).
        views: "max" over the views that see p, or "head" (view 0 only).
        camera_sources: policy camera -> env camera name (when the observation keys were renamed).
    """
    if views not in VIEW_MODES:
        raise ValueError(f"views must be one of {VIEW_MODES}, got {views!r}")
    if geometry is None:
        return 0.0
    camera_sources = camera_sources or {}
    num_views = len(cameras)
    best = 0.0
    for index, cam in enumerate(cameras[:1] if views == "head" else cameras):
        calib = geometry.cameras.get(camera_sources.get(cam, cam))
        if calib is None:
            continue
        uv, depth = calib.project(geometry.ee_pos[None])
        if depth[0] <= 0 or not calib.in_image(uv)[0]:
            continue
        if index == 0:  # the head view is resized to head_hw before packing
            scale = np.array([head_hw[1] / calib.width, head_hw[0] / calib.height])
            uv = (uv + 0.5) * scale - 0.5
            canvas_uv = view_to_canvas(uv, 0, head_hw, num_views)
        else:
            canvas_uv = view_to_canvas(uv, index, head_hw, num_views, view_hw=(calib.height, calib.width))
        value = float(bilinear_sample(value_canvas, torch.as_tensor(canvas_uv))[0])
        best = max(best, value)
    return best


def value_frame_index(step_in_chunk: int, frame_stride: int, num_frames: int) -> int:
    """Which decoded future frame shows the state that action ``step_in_chunk`` of the chunk leads to.

    Decoded frame i shows dataset step t + (i + 1) * frame_stride (:meth:`AIMPolicy.decode_value_maps`);
    action j leads to step t + j + 1, shown by frame (j + 1) / frame_stride - 1, or, between frames,
    by the next one: floor(j / frame_stride) (tiny preset, stride 4: actions 0-3 read frame 0).
    """
    return min(num_frames - 1, max(0, step_in_chunk) // max(frame_stride, 1))


def step_rewards(dense: Tensor, success: Tensor, lambda_d: float, lambda_s: float) -> Tensor:
    """r_t = lambda_d dense_t + lambda_s success_t (elementwise)."""
    return lambda_d * dense.float() + lambda_s * success.float()


def episode_returns(
    dense: Tensor,
    success: Tensor,
    valid: Tensor,
    lambda_d: float,
    lambda_s: float,
    dense_aggregation: str = "mean",
) -> Tensor:
    """(N,) episode returns from per-step (N, T) dense rewards, success flags and validity masks.

    ``"sum"``: R = sum_t r_t. ``"mean"`` (default): the dense term is averaged over the episode's
    steps instead of summed, R = lambda_d mean_t dense_t + lambda_s sum_t success_t, so that an
    episode that ends early on success is not paid less dense reward than one that keeps hovering.
    """
    if dense_aggregation not in DENSE_AGGREGATIONS:
        raise ValueError(f"dense_aggregation must be one of {DENSE_AGGREGATIONS}, got {dense_aggregation!r}")
    valid = valid.float()
    dense_total = (dense.float() * valid).sum(-1)
    if dense_aggregation == "mean":
        dense_total = dense_total / valid.sum(-1).clamp(min=1)
    return lambda_d * dense_total + lambda_s * (success.float() * valid).sum(-1)


def group_advantages(returns: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """(N,) GRPO advantages (R - mean_g) / (std_g + eps) within consecutive groups of ``group_size``.

    Rollouts ``[k G, (k + 1) G)`` share an initial state. std is the population std; a group whose
    returns are all equal gets zero advantages.
    """
    if returns.numel() % group_size:
        raise ValueError(f"{returns.numel()} returns do not split into groups of {group_size}")
    grouped = returns.float().reshape(-1, group_size)
    mean = grouped.mean(-1, keepdim=True)
    std = grouped.std(-1, unbiased=False, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)
