"""LeRobot env plugins of AIM. Importing this package registers ``--env.type=aim_metaworld``.

Cheap to import: MetaWorld and MuJoCo are imported by the env itself, on first reset.
"""

from .configuration import AIMMetaWorldEnvConfig, parse_cameras
from .metaworld_cameras import FLIPPED_CAMERAS
from .metaworld_contacts import MAX_CONTACT_POINTS
from .metaworld_env import AIMMetaWorldEnv, create_aim_metaworld_envs
from .metaworld_tasks import difficulty_groups, expert_policy_class_name, resolve_tasks, task_descriptions

__all__ = [
    "FLIPPED_CAMERAS",
    "MAX_CONTACT_POINTS",
    "AIMMetaWorldEnv",
    "AIMMetaWorldEnvConfig",
    "create_aim_metaworld_envs",
    "difficulty_groups",
    "expert_policy_class_name",
    "parse_cameras",
    "resolve_tasks",
    "task_descriptions",
]
