"""A MetaWorld task as a gymnasium env with several cameras, their calibrations and contact signals.

The env follows LeRobot's ``lerobot.envs.metaworld.MetaworldEnv`` (same task set-up: ``MT1(task,
seed=42)``, its first train task, unfrozen seeded resets so that ``reset(seed=s)`` sets the object
positions; corner2 moved and flipped as LeRobot does; ``task`` / ``task_description`` attributes) and
adds, per step:

- ``observation["pixels"][<name>]``: (H, W, 3) uint8 per camera (:mod:`.metaworld_cameras`: one
  ``mujoco.Renderer`` per image size, shadows and reflections off; cameras that MetaWorld renders
  upside down, ``corner``, ``corner2``, ``corner3``, rotated with ``np.flip(img, (0, 1))``).
- ``observation["agent_pos"]``: (4,) float32, hand xyz and normalised finger distance.
- ``info``: see :meth:`AIMMetaWorldEnv.step` (contact signals: :mod:`.metaworld_contacts`).

Task names, groups and experts come from LeRobot's table (:mod:`.metaworld_tasks`).

MetaWorld and MuJoCo are imported, and the simulator built, on first use (``reset``), inside the
process that uses the env: vector-env workers (forkserver) each get their own GL context.
"""

import functools
import os
import warnings
from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lerobot_aim.asvm.camera import CameraCalibration

from .configuration import ACTION_DIM, DEFAULT_CAMERAS, OBS_TYPES, STATE_DIM, parse_cameras
from .metaworld_cameras import FLIPPED_CAMERAS, SceneCameras
from .metaworld_contacts import MAX_CONTACT_POINTS, ContactGeoms
from .metaworld_tasks import (
    difficulty_groups,
    expert_policy_class_name,
    resolve_tasks,
    task_descriptions,
    task_name,
)

# MetaWorld's own episode limit.
METAWORLD_MAX_PATH_LENGTH = 500


class AIMMetaWorldEnv(gym.Env):
    """One MetaWorld task with several cameras, calibrations and contact signals (see module doc).

    Args:
        task: MT50 task name, e.g. "pick-place-v3" (a "metaworld-" prefix is accepted).
        cameras: "name:mujoco_camera" pairs, comma-separated (or a list); the first is the head view.
        obs_type: "pixels_agent_pos", "pixels" or "agent_pos" (renders nothing; images on demand
            with :meth:`render_cameras`).
        render_mode: "rgb_array" (``render()`` tiles all views side by side).
        observation_height, observation_width: image size of every camera.
        episode_length: steps before ``truncated``.
        terminate_on_success: end the episode (``terminated``) at the first success.
        fps: advertised in ``metadata["render_fps"]`` (MetaWorld runs at 80 Hz whatever it says).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "pick-place-v3",
        cameras: str | list[str] = DEFAULT_CAMERAS,
        obs_type: str = "pixels_agent_pos",
        render_mode: str = "rgb_array",
        observation_height: int = 128,
        observation_width: int = 128,
        episode_length: int = METAWORLD_MAX_PATH_LENGTH,
        terminate_on_success: bool = True,
        fps: int = 80,
    ):
        super().__init__()
        if obs_type not in OBS_TYPES:
            raise ValueError(f"Unsupported obs_type {obs_type!r}; choose one of {OBS_TYPES}.")
        self.task = task_name(task)
        descriptions = task_descriptions()
        if self.task not in descriptions:
            raise ValueError(f"Unknown MetaWorld task {self.task!r}.")
        self.task_description = descriptions[self.task]
        self.camera_pairs = parse_cameras(cameras)
        self.camera_names = [name for name, _ in self.camera_pairs]
        self.obs_type = obs_type
        self.render_mode = render_mode
        self.observation_height = int(observation_height)
        self.observation_width = int(observation_width)
        self.episode_length = int(episode_length)
        self._max_episode_steps = self.episode_length  # read by lerobot-eval's rollout
        self.terminate_on_success = bool(terminate_on_success)
        self.metadata = {**self.metadata, "render_fps": fps}

        image_space = spaces.Box(
            low=0, high=255, shape=(self.observation_height, self.observation_width, 3), dtype=np.uint8
        )
        obs_spaces: dict[str, spaces.Space] = {}
        if obs_type != "agent_pos":
            obs_spaces["pixels"] = spaces.Dict({name: image_space for name in self.camera_names})
        if obs_type != "pixels":
            obs_spaces["agent_pos"] = spaces.Box(
                low=-1000.0, high=1000.0, shape=(STATE_DIM,), dtype=np.float32
            )
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(low=-1, high=1, shape=(ACTION_DIM,), dtype=np.float32)

        # Built lazily (`_ensure_env`), in the process that steps the env.
        self._env = None
        self._mujoco = None
        self.scene_cameras: SceneCameras | None = None  # the configured cameras of the scene
        self.contact_geoms: ContactGeoms | None = None  # gripper, robot and object geoms
        self._main_body = 0
        self._expert = None
        self._raw_obs: np.ndarray | None = None
        self._frames: dict[str, np.ndarray] | None = None  # images of the current state, if rendered
        self._elapsed_steps = 0
        self._gripper_command = 0.0

    # -- construction --

    def _ensure_env(self) -> None:
        if self._env is not None:
            return
        if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
            os.environ["MUJOCO_GL"] = "egl"  # headless default; must be set before mujoco is imported
        import metaworld
        import mujoco

        self._mujoco = mujoco
        mt1 = metaworld.MT1(self.task, seed=42)
        env = mt1.train_classes[self.task](render_mode=None)  # we render ourselves
        env.set_task(mt1.train_tasks[0])
        model = env.model
        self.scene_cameras = SceneCameras(mujoco, model, self.camera_pairs, task=self.task)
        env.max_path_length = max(self.episode_length, METAWORLD_MAX_PATH_LENGTH)
        env.reset()
        env._freeze_rand_vec = False  # otherwise every reset gives the same object positions
        env.seeded_rand_vec = True  # reset(seed=s) controls the object positions
        self._env = env
        self.contact_geoms = ContactGeoms.of(model)
        self._main_body = self.contact_geoms.first_object_body(model)

    # -- gym API --

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Reset; ``seed`` sets the object and goal positions (MetaWorld's seeded reset)."""
        self._ensure_env()
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(seed)
        raw_obs, _ = self._env.reset()
        self._elapsed_steps = 0
        self._gripper_command = 0.0
        self._raw_obs = np.asarray(raw_obs, dtype=np.float64)
        self._frames = None
        self._pick_main_body()
        info = self._info(is_success=False)
        return self._observation(), info

    def step(self, action: np.ndarray):
        """Step. ``info`` holds (all positions in the world frame, metres):

        - ``is_success`` (bool), ``task`` (str), ``step`` (int, steps since reset);
        - ``raw_obs`` (39,): MetaWorld's observation (what its scripted experts read);
        - ``ee_pos`` (3,): tool-centre point, midway between the finger pads; ``hand_pos`` (3,): the
          hand body (= ``agent_pos[:3]``);
        - ``gripper_command`` (float): the gripper effort of the last action (> 0 closes; 0 after
          reset); ``gripper_opening`` (float): normalised finger distance (= ``agent_pos[3]``);
        - ``object_pos`` (3,): MetaWorld's main-object position (``raw_obs[4:7]``); ``object_com``
          (3,): centre of mass of the main object's body;
        - ``contact``: ``pad_contacts`` (2,) bool, left / right finger (pad or claw) touches an
          object; ``gripper_object`` (bool) any gripper geom (hand, fingers or the wrist link above
          them, which pushes doors and windows) touches an object (a movable body that is not the
          robot; MetaWorld's fixed furniture is not one); ``points``
          (MAX_CONTACT_POINTS, 3) gripper-object contact points (NaN-padded) and ``num_points``;
          ``pad_points`` (2, 3) mean contact point per finger (NaN if none); ``pad_forces`` (2,)
          normal force per finger, N; ``support_points`` / ``num_support_points``: contacts of the
          main object with anything but the robot (where it rests);
        - ``cameras``: per camera name, ``intrinsics`` (9,) and ``extrinsics`` (12,) float32 as
          ``CameraCalibration.to_flat`` gives them, for the stored (flipped) image.
        """
        self._ensure_env()
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"Expected an action of shape ({ACTION_DIM},), got {action.shape}.")
        # MetaWorld clips the xyz part and MuJoCo the gripper effort: clip here so that
        # `gripper_command` is the effort applied.
        action = np.clip(action, -1.0, 1.0)
        raw_obs, reward, _, _, mw_info = self._env.step(action)
        self._elapsed_steps += 1
        self._gripper_command = float(action[-1])
        self._raw_obs = np.asarray(raw_obs, dtype=np.float64)
        self._frames = None
        is_success = bool(mw_info.get("success", 0))
        terminated = is_success and self.terminate_on_success
        truncated = self._elapsed_steps >= self.episode_length
        info = self._info(is_success=is_success)
        return self._observation(), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray:
        """All views of the current state side by side, (H, n_cameras * W, 3) uint8."""
        self._ensure_env()
        frames = self.render_cameras()
        return np.concatenate([frames[name] for name in self.camera_names], axis=1)

    def close(self) -> None:
        if self.scene_cameras is not None:
            self.scene_cameras.close()
        if self._env is not None:
            self._env.close()
            self._env = None

    # -- extras --

    def render_cameras(self, height: int | None = None, width: int | None = None) -> dict[str, np.ndarray]:
        """Images of the current state, ``{name: (H, W, 3) uint8}``, flipped like the observations.

        Without a size, the observation size (cached until the next step or reset).
        """
        self._ensure_env()
        height = self.observation_height if height is None else int(height)
        width = self.observation_width if width is None else int(width)
        default_size = (height, width) == (self.observation_height, self.observation_width)
        if default_size and self._frames is not None:
            return self._frames
        frames = self.scene_cameras.render(self._env.data, height, width)
        if default_size:
            self._frames = frames
        return frames

    def camera_calibration(
        self, name: str, height: int | None = None, width: int | None = None
    ) -> CameraCalibration:
        """Calibration of camera ``name`` at the current step, for its stored (flipped) image."""
        self._ensure_env()
        return self.scene_cameras.calibration(
            self._env.data,
            name,
            height=self.observation_height if height is None else int(height),
            width=self.observation_width if width is None else int(width),
        )

    @property
    def raw_observation(self) -> np.ndarray | None:
        """MetaWorld's 39-d observation of the current step."""
        return self._raw_obs

    @property
    def unwrapped_metaworld(self):
        """The MetaWorld env itself (built on first reset)."""
        self._ensure_env()
        return self._env

    @property
    def expert_policy(self):
        """The scripted expert of this task (``metaworld.policies``), built on first use."""
        if self._expert is None:
            import metaworld.policies

            self._expert = getattr(metaworld.policies, expert_policy_class_name(self.task))()
        return self._expert

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current step, clipped to the action space: (4,) float32.

        (The experts' raw actions can exceed [-1, 1]; the env clips them anyway, so this is the
        action that is executed, and the one to record.)
        """
        if self._raw_obs is None:
            raise RuntimeError("Call reset() before expert_action().")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
            action = self.expert_policy.get_action(self._raw_obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    # -- internals --

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        if self.obs_type != "agent_pos":
            obs["pixels"] = {name: img.copy() for name, img in self.render_cameras().items()}
        if self.obs_type != "pixels":
            obs["agent_pos"] = self._raw_obs[:STATE_DIM].astype(np.float32)
        return obs

    def _pick_main_body(self) -> None:
        """The object body with the geom nearest to MetaWorld's main-object position (raw_obs[4:7])."""
        body = self.contact_geoms.nearest_object_body(self._env.model, self._env.data, self._raw_obs[4:7])
        if body is not None:
            self._main_body = body

    def _info(self, is_success: bool) -> dict[str, Any]:
        env = self._env
        data = env.data
        cameras = {}
        for name in self.camera_names:
            intrinsics, extrinsics = self.camera_calibration(name).without_flips().to_flat()
            cameras[name] = {"intrinsics": intrinsics, "extrinsics": extrinsics}
        return {
            "is_success": bool(is_success),
            "task": self.task,
            "step": int(self._elapsed_steps),
            "raw_obs": self._raw_obs.copy(),
            "ee_pos": np.array(env.tcp_center, dtype=np.float64),
            "hand_pos": np.array(data.body("hand").xpos, dtype=np.float64),
            "gripper_command": float(self._gripper_command),
            "gripper_opening": float(self._raw_obs[3]),
            "object_pos": self._raw_obs[4:7].copy(),
            "object_com": np.array(data.xipos[self._main_body], dtype=np.float64),
            "contact": self.contact_geoms.contacts(self._mujoco, env.model, data, self._main_body),
            "cameras": cameras,
        }


# ---- Vector envs, as LeRobot's create_metaworld_envs ----


def create_aim_metaworld_envs(
    task: str,
    n_envs: int,
    gym_kwargs: dict[str, Any] | None = None,
    use_async_envs: bool = False,
) -> dict[str, dict[int, Any]]:
    """``{task_group: {task_id: vector env of n_envs AIMMetaWorldEnv}}``.

    Like LeRobot's ``create_metaworld_envs``: ``task`` is a task, a difficulty group or a list of
    both; a SyncVectorEnv, or (``use_async_envs`` and ``n_envs > 1``) LeRobot's lazy forkserver
    AsyncVectorEnv, which starts its workers on first use and freezes finished sub-envs.
    """
    if not isinstance(n_envs, int) or n_envs <= 0:
        raise ValueError(f"n_envs must be a positive int; got {n_envs}.")
    gym_kwargs = dict(gym_kwargs or {})
    is_async = use_async_envs and n_envs > 1
    lazy_cls = None
    if is_async:
        try:
            from lerobot.envs.utils import _LazyAsyncVectorEnv as lazy_cls
        except ImportError:  # a LeRobot without it: a plain forkserver AsyncVectorEnv
            lazy_cls = None
    out: dict[str, dict[int, Any]] = defaultdict(dict)
    spaces_cache = None
    for group, tasks in resolve_tasks(task).items():
        for task_id, name in enumerate(tasks):
            fns = [functools.partial(AIMMetaWorldEnv, task=name, **gym_kwargs) for _ in range(n_envs)]
            if lazy_cls is not None:
                vec = lazy_cls(fns, *(spaces_cache or (None, None, None)))
                spaces_cache = spaces_cache or (vec.observation_space, vec.action_space, vec.metadata)
            elif is_async:
                vec = gym.vector.AsyncVectorEnv(fns, context="forkserver")
            else:
                vec = gym.vector.SyncVectorEnv(fns)
            out[group][task_id] = vec
    return {group: dict(task_map) for group, task_map in out.items()}


__all__ = [
    "FLIPPED_CAMERAS",
    "MAX_CONTACT_POINTS",
    "METAWORLD_MAX_PATH_LENGTH",
    "AIMMetaWorldEnv",
    "create_aim_metaworld_envs",
    "difficulty_groups",
    "expert_policy_class_name",
    "resolve_tasks",
    "task_descriptions",
]
