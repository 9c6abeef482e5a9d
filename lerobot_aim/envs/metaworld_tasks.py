"""MetaWorld MT50 task names, difficulty groups, instructions and scripted experts.

LeRobot's own table (``lerobot/envs/metaworld_config.json``), read without importing MetaWorld, so
that configs can check task names cheaply.
"""

import functools
import json
from importlib import resources
from typing import Any


@functools.lru_cache(maxsize=1)
def _lerobot_metaworld_tables() -> dict[str, Any]:
    """LeRobot's ``metaworld_config.json`` (task descriptions, difficulty groups, expert classes)."""
    path = resources.files("lerobot.envs") / "metaworld_config.json"
    return json.loads(path.read_text())


def task_descriptions() -> dict[str, str]:
    """MT50 task name -> language instruction (LeRobot's ``TASK_DESCRIPTIONS``)."""
    return dict(_lerobot_metaworld_tables()["TASK_DESCRIPTIONS"])


def difficulty_groups() -> dict[str, list[str]]:
    """Difficulty group (easy, medium, hard, very_hard) -> task names (LeRobot's ``DIFFICULTY_TO_TASKS``)."""
    return {k: list(v) for k, v in _lerobot_metaworld_tables()["DIFFICULTY_TO_TASKS"].items()}


def expert_policy_class_name(task: str) -> str:
    """Name of the scripted expert of ``task`` in ``metaworld.policies`` (e.g. SawyerPickPlaceV3Policy)."""
    return _lerobot_metaworld_tables()["TASK_POLICY_MAPPING"][task_name(task)]


def task_name(task: str) -> str:
    """``" metaworld-pick-place-v3"`` -> ``"pick-place-v3"`` (LeRobot's prefix and blanks removed)."""
    return task.strip().removeprefix("metaworld-")


def resolve_tasks(task: str) -> dict[str, list[str]]:
    """``"easy,pick-place-v3"`` -> ``{"easy": [...easy tasks...], "pick-place-v3": ["pick-place-v3"]}``.

    Groups are LeRobot's difficulty groups; every name must be a known MT50 task or group.
    """
    groups = [task_name(t) for t in task.split(",") if t.strip()]
    if not groups:
        raise ValueError("`task` must name at least one MetaWorld task or difficulty group.")
    known_groups = difficulty_groups()
    known_tasks = task_descriptions()
    out: dict[str, list[str]] = {}
    for group in groups:
        tasks = known_groups.get(group, [group])
        unknown = [t for t in tasks if t not in known_tasks]
        if unknown:
            raise ValueError(
                f"Unknown MetaWorld task {unknown[0]!r}. Use an MT50 task (e.g. 'pick-place-v3'), a group "
                f"{sorted(known_groups)}, or a comma-separated list of them."
            )
        out[group] = tasks
    return out
