"""``--robot.type=aim_sim``: a simulated robot to try a policy server without hardware.

It has ``<joint>.pos`` joints that move to the last action sent, and cameras that return random
uint8 frames, the same ones for the same ``seed`` and number of actions taken (the scene changes only
when the robot acts, so two runs that act alike see alike). Use it with ``lerobot-aim-robot-client``
(or LeRobot's ``robot_client`` after ``import lerobot_aim.serving``) to check that a server answers
with action chunks of the right size before connecting a real robot. It records the actions it
received (``AIMSimRobot.actions``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lerobot.robots.config import RobotConfig
from lerobot.robots.robot import Robot


@RobotConfig.register_subclass("aim_sim")
@dataclass(kw_only=True)
class AIMSimRobotConfig(RobotConfig):
    # Joint names; the robot observes and takes one `<joint>.pos` float per joint.
    joints: list[str] = field(default_factory=lambda: ["j0", "j1", "j2", "j3"])
    # Camera names; each observation holds a random (camera_height, camera_width, 3) uint8 frame per
    # camera, drawn from (seed, number of actions taken).
    camera_names: list[str] = field(default_factory=lambda: ["head"])
    camera_height: int = 48
    camera_width: int = 64
    # Seed of the camera noise.
    seed: int = 0


class AIMSimRobot(Robot):
    config_class = AIMSimRobotConfig
    name = "aim_sim"

    def __init__(self, config: AIMSimRobotConfig):
        # Robot.__init__ would create a calibration folder under the user's cache: nothing to calibrate here.
        self.config = config
        self.robot_type = self.name
        self.id = config.id
        self.calibration_dir = config.calibration_dir
        self.calibration = {}
        self._connected = False
        self._lock = threading.Lock()
        self._positions = np.zeros(len(config.joints), dtype=np.float32)
        self.actions: deque[dict[str, float]] = deque(maxlen=10_000)
        self.steps = 0  # actions taken

    @property
    def _motors(self) -> list[str]:
        return [f"{joint}.pos" for joint in self.config.joints]

    @property
    def observation_features(self) -> dict:
        cameras = {
            c: (self.config.camera_height, self.config.camera_width, 3) for c in self.config.camera_names
        }
        return {**dict.fromkeys(self._motors, float), **cameras}

    @property
    def action_features(self) -> dict:
        return dict.fromkeys(self._motors, float)

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict[str, Any]:
        if not self._connected:
            raise ConnectionError(f"{self} is not connected")
        with self._lock:
            obs: dict[str, Any] = {m: float(p) for m, p in zip(self._motors, self._positions, strict=True)}
            rng = np.random.default_rng([self.config.seed, self.steps])
            shape = (self.config.camera_height, self.config.camera_width, 3)
            for camera in self.config.camera_names:
                obs[camera] = rng.integers(0, 256, shape, dtype=np.uint8)
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        if not self._connected:
            raise ConnectionError(f"{self} is not connected")
        if set(action) != set(self._motors):
            raise ValueError(f"{self} takes {self._motors}, got {sorted(action)}")
        with self._lock:
            self._positions = np.array([float(action[m]) for m in self._motors], dtype=np.float32)
            self.actions.append(dict(action))
            self.steps += 1
        return action

    def disconnect(self) -> None:
        self._connected = False
