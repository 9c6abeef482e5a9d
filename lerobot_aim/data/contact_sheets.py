"""Contact sheets of an annotated episode: frames with their value maps and projected targets, a row per camera.

``lerobot-aim-annotate --contact_sheets=true`` writes ``<output>/contact_sheets/episode_XXXX.png``
(drawn by :mod:`lerobot_aim.viz.contact_sheet`) so that a person can see that the maps sit where
the robot interacts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lerobot_aim.data.calibration import Camera
from lerobot_aim.data.configs import AnnotateConfig
from lerobot_aim.data.dataset_io import to_uint8_hwc

CONTACT_SHEET_DIR = "contact_sheets"


class SheetCollector:
    """Frames, value maps and projected targets at evenly spaced steps, for one episode's contact sheet."""

    def __init__(self, cfg: AnnotateConfig, cameras: list[Camera], num_steps: int):
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
        self.data[camera].append((to_uint8_hwc(frame), value_map, uv, label))

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
