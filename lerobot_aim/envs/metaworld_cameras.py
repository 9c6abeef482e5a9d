"""The cameras of a MetaWorld scene: images as AIM stores them, and the calibration of those images.

Every configured camera is rendered at the requested size with one ``mujoco.Renderer`` per image
size, shadows and reflections off (they cost about 10x). Cameras that MetaWorld renders upside down
(:data:`FLIPPED_CAMERAS`) are rotated with ``np.flip(img, (0, 1))``, and their calibration describes
the rotated image. corner2 is moved where LeRobot's MetaWorld wrapper puts it.
"""

import atexit
import weakref
from typing import Any

import numpy as np

from lerobot_aim.asvm.camera import CameraCalibration

# MuJoCo cameras that MetaWorld renders upside down (their "up" axis points down in the world).
FLIPPED_CAMERAS = frozenset({"corner", "corner2", "corner3"})
# Where LeRobot's MetaWorld wrapper puts corner2 (closer to the table than MetaWorld's default).
LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)


class SceneCameras:
    """The configured cameras of one MuJoCo model: their ids, which are stored rotated, and renderers.

    Args:
        mujoco: the imported ``mujoco`` module.
        model: the scene's ``MjModel`` (corner2 is moved in it).
        camera_pairs: ``(output name, MuJoCo camera)`` pairs, head first.
        task: the task's name, for messages.
    """

    def __init__(self, mujoco, model, camera_pairs: list[tuple[str, str]], task: str = ""):
        model_cameras = [model.camera(i).name for i in range(model.ncam)]
        missing = [cam for _, cam in camera_pairs if cam not in model_cameras]
        if missing:
            raise ValueError(f"MuJoCo camera(s) {missing} not in {task}; it has {model_cameras}.")
        if "corner2" in model_cameras:
            model.cam_pos[model.camera("corner2").id] = LEROBOT_CORNER2_POS
        self._mujoco = mujoco
        self._model = model
        self.names = [name for name, _ in camera_pairs]
        self.ids = {name: model.camera(cam).id for name, cam in camera_pairs}
        self.flipped = {name: cam in FLIPPED_CAMERAS for name, cam in camera_pairs}
        self._renderers: dict[tuple[int, int], Any] = {}
        self._cleanup_registered = False

    def _renderer(self, height: int, width: int):
        key = (height, width)
        if key not in self._renderers:
            mujoco, model = self._mujoco, self._model
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
            renderer = mujoco.Renderer(model, height=height, width=width)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            if not self._cleanup_registered:
                self._cleanup_registered = True
                # Free the GL contexts of cameras that are not closed: when they are collected, and at
                # exit before MuJoCo terminates EGL (registered after MuJoCo's own exit hook, so run
                # before it; otherwise Renderer.__del__ prints EGL errors at exit).
                weakref.finalize(self, close_renderers, self._renderers).atexit = False
                atexit.register(close_renderers, self._renderers)
            self._renderers[key] = renderer
        return self._renderers[key]

    def render(self, data, height: int, width: int) -> dict[str, np.ndarray]:
        """``{name: (H, W, 3) uint8}`` of the state in ``data``, rotated where the camera is flipped."""
        renderer = self._renderer(height, width)
        frames = {}
        for name in self.names:
            renderer.update_scene(data, camera=self.ids[name])
            image = renderer.render()
            frames[name] = np.ascontiguousarray(np.flip(image, (0, 1))) if self.flipped[name] else image
        return frames

    def calibration(self, data, name: str, height: int, width: int) -> CameraCalibration:
        """Calibration of camera ``name`` in the state ``data``, for its stored (rotated) image."""
        cam = self.ids[name]
        return CameraCalibration.from_mujoco(
            fovy_deg=float(self._model.cam_fovy[cam]),
            cam_xpos=data.cam_xpos[cam],
            cam_xmat=data.cam_xmat[cam],
            width=width,
            height=height,
            flip=self.flipped[name],
        )

    def close(self) -> None:
        """Free the renderers (new ones are made if the cameras render again)."""
        close_renderers(self._renderers)


def close_renderers(renderers: dict) -> None:
    while renderers:
        _, renderer = renderers.popitem()
        renderer.close()
