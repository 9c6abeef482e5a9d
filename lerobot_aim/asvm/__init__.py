"""Action-based spatial value maps (ASVM): where the robot should interact next, as image heat maps.

- `camera`: calibration and projection of world points into pixels.
- `render`: Gaussian value maps of 3D interaction regions (width from focal length and depth).
- `events`: grasp / place / contact events from per-step signals (one rule for simulator contacts),
  and the next region per step.
- `packing`: the T-pose canvas shared by RGB frames and value maps.
"""

from .camera import CameraCalibration, extrinsics_from_mujoco, intrinsics_from_fovy
from .events import (
    SETTLE_SPEED,
    SETTLE_STEPS,
    InteractionEvent,
    detect_contact_events,
    detect_first_contact,
    detect_grasp_place_events,
    detect_gripper_events,
    next_interaction_targets,
)
from .packing import canvas_size, pack_tpose, unpack_tpose, view_to_canvas
from .render import render_from_pixels, render_value_map

__all__ = [
    "SETTLE_SPEED",
    "SETTLE_STEPS",
    "CameraCalibration",
    "InteractionEvent",
    "canvas_size",
    "detect_contact_events",
    "detect_first_contact",
    "detect_gripper_events",
    "detect_grasp_place_events",
    "extrinsics_from_mujoco",
    "intrinsics_from_fovy",
    "next_interaction_targets",
    "pack_tpose",
    "render_from_pixels",
    "render_value_map",
    "unpack_tpose",
    "view_to_canvas",
]
