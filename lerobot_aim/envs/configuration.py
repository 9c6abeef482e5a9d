"""``--env.type=aim_metaworld``: MetaWorld MT50 with a head camera, two wrist cameras and the signals AIM needs.

LeRobot's own ``--env.type=metaworld`` renders one camera (corner2) at 480x480 whatever the config
says. This env renders every configured camera at the configured size (one MuJoCo renderer per
size, shadows and reflections off), and returns in ``info`` what value maps are made of: camera
calibrations, the tool-centre point, gripper/object contacts and the object's position.

Importing this module is cheap: MetaWorld and MuJoCo are imported inside the env, on first reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

# Output name -> MuJoCo camera, as "name:camera" pairs (a bare camera name is its own output name).
# corner2 is the head view (placed where LeRobot's MetaWorld wrapper puts it, image flipped as it does);
# gripperPOV looks down between the fingers, behindGripper looks at the gripper from behind the arm.
DEFAULT_CAMERAS = "head:corner2,wrist_left:gripperPOV,wrist_right:behindGripper"
OBS_TYPES = ("pixels_agent_pos", "pixels", "agent_pos")
STATE_DIM = 4  # hand xyz + normalised finger distance (MetaWorld's observation[:4])
ACTION_DIM = 4  # hand xyz displacement + gripper effort (> 0 closes), each in [-1, 1]


def parse_cameras(spec: str | list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``"head:corner2,wrist:gripperPOV"`` -> ``[("head", "corner2"), ("wrist", "gripperPOV")]``.

    A bare MuJoCo camera name (no ``:``) keeps its own name as output name.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    pairs = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, camera = item.partition(":")
        name, camera = name.strip(), camera.strip()
        if not sep:
            camera = name
        if not name or not camera:
            raise ValueError(f"Bad camera entry {item!r}: expected 'name:mujoco_camera' or 'mujoco_camera'.")
        if any(ch in name for ch in "./ "):
            raise ValueError(f"Camera output name {name!r} must not contain '.', '/' or spaces.")
        pairs.append((name, camera))
    if not pairs:
        raise ValueError("At least one camera is needed (`cameras`), e.g. 'head:corner2'.")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"Camera output names must be unique, got {names}.")
    return pairs


@EnvConfig.register_subclass("aim_metaworld")
@dataclass
class AIMMetaWorldEnvConfig(EnvConfig):
    """MetaWorld (MT50, v3 tasks) for AIM: several cameras, calibrations and contacts.

    Observations: ``pixels/<name>`` (H, W, 3) uint8 per camera -> ``observation.images.<name>``, and
    ``agent_pos`` (4,) -> ``observation.state``. Actions: 4-d, as LeRobot's MetaWorld env.
    """

    # A MT50 task ("pick-place-v3"), a difficulty group (easy, medium, hard, very_hard) or a
    # comma-separated list of both, as LeRobot's `--env.type=metaworld`.
    task: str = "pick-place-v3"
    # MetaWorld steps 5 physics steps of 2.5 ms: 80 Hz (the fps of LeRobot's MetaWorld datasets).
    fps: int = 80
    # Steps before truncation (MetaWorld's own limit is 500).
    episode_length: int = 500
    # "pixels_agent_pos", "pixels", or "agent_pos" (no rendering at all: fast, for scripted experts).
    obs_type: str = "pixels_agent_pos"
    render_mode: str = "rgb_array"
    # "name:mujoco_camera" pairs, comma-separated; the first camera is the head view. MuJoCo cameras:
    # topview, corner, corner2, corner3 (fixed), behindGripper, gripperPOV (move with the hand).
    cameras: str = DEFAULT_CAMERAS
    # Size of every camera's image.
    observation_height: int = 128
    observation_width: int = 128
    # End the episode at the first success (LeRobot's behaviour); False runs to `episode_length`
    # (e.g. to record the object settling after it is placed).
    terminate_on_success: bool = True
    features: dict[str, PolicyFeature] = field(
        default_factory=lambda: {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}
    )
    features_map: dict[str, str] = field(default_factory=lambda: {ACTION: ACTION, "agent_pos": OBS_STATE})

    def __post_init__(self):
        if self.obs_type not in OBS_TYPES:
            raise ValueError(f"Unsupported obs_type {self.obs_type!r}; choose one of {OBS_TYPES}.")
        if self.observation_height <= 0 or self.observation_width <= 0:
            raise ValueError(
                f"Image size must be positive, got {self.observation_height}x{self.observation_width}."
            )
        if self.episode_length <= 0:
            raise ValueError(f"episode_length must be positive, got {self.episode_length}.")
        from .metaworld_tasks import resolve_tasks

        resolve_tasks(self.task)  # fail early on unknown task names
        if self.obs_type != "agent_pos":
            for name, _ in self.camera_pairs:
                key = f"pixels/{name}"
                self.features[key] = PolicyFeature(
                    type=FeatureType.VISUAL, shape=(self.observation_height, self.observation_width, 3)
                )
                self.features_map.setdefault(key, f"{OBS_IMAGES}.{name}")
        if self.obs_type != "pixels":
            self.features["agent_pos"] = PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))

    @property
    def camera_pairs(self) -> list[tuple[str, str]]:
        """``[(output_name, mujoco_camera), ...]``, head first."""
        return parse_cameras(self.cameras)

    @property
    def camera_names(self) -> list[str]:
        """Output camera names, head first (dataset keys ``observation.images.<name>``)."""
        return [name for name, _ in self.camera_pairs]

    @property
    def gym_kwargs(self) -> dict:
        return {
            "cameras": self.cameras,
            "obs_type": self.obs_type,
            "render_mode": self.render_mode,
            "observation_height": self.observation_height,
            "observation_width": self.observation_width,
            "episode_length": self.episode_length,
            "terminate_on_success": self.terminate_on_success,
            "fps": self.fps,
        }

    def create_envs(self, n_envs: int, use_async_envs: bool = False):
        """``{task_group: {task_id: vector env of n_envs}}``, as LeRobot's MetaWorld config."""
        from .metaworld_env import create_aim_metaworld_envs

        return create_aim_metaworld_envs(
            task=self.task, n_envs=n_envs, gym_kwargs=self.gym_kwargs, use_async_envs=use_async_envs
        )
