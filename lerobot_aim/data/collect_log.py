"""What a collection keeps in its dataset and finds there again: the collection log and resuming.

``lerobot-aim-collect`` logs in ``meta/aim_collect.json`` (:data:`COLLECT_LOG`, next to LeRobot's
metadata) its settings and the seed, outcome and events of every attempt; the log is published with
each episode (:mod:`lerobot_aim.data.publish`). With ``--resume=true`` a run appends to the dataset at
``--root`` only after removing what a killed run left next to it, refusing a damaged dataset, or one
whose features, fps or value-map settings differ from this run's, and it skips the seeds already used
(a dataset written by another tool: one seed per existing episode of the task, from ``--seed``).
"""

import json
import os
from pathlib import Path

import numpy as np
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

from lerobot_aim.data.configs import COLLECT_COMMAND, CollectConfig
from lerobot_aim.data.errors import CollectError
from lerobot_aim.data.expert_episodes import FPS, EpisodeBuffer
from lerobot_aim.data.integrity import dataset_problems, is_lerobot_dataset
from lerobot_aim.data.publish import clean_staging

# Collection log next to LeRobot's metadata: settings, seeds, outcomes and events of every episode.
COLLECT_LOG = "meta/aim_collect.json"
COLLECT_LOG_VERSION = 1


def read_collect_log(root: str | Path) -> dict | None:
    """The collection log of a dataset written by ``lerobot-aim-collect`` (None if there is none)."""
    path = Path(root) / COLLECT_LOG
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_collect_log(root: Path, log: dict) -> None:
    """Write ``log`` at ``root`` (one file, replaced atomically)."""
    path = root / COLLECT_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(log, indent=1))
    os.replace(tmp, path)


def new_log(cfg: CollectConfig) -> dict:
    """The log of a new collection with ``cfg``'s settings, before any attempt."""
    return {
        "version": COLLECT_LOG_VERSION,
        "command": COLLECT_COMMAND,
        "fps": FPS,
        "cameras": cfg.cameras,
        "image_size": cfg.image_size,
        "value_maps": cfg.map_settings(),
        "attempted_seeds": {},  # task -> seeds already run (kept, dropped or interrupted before saving)
        "episodes": [],  # one entry per saved episode
        "dropped": [],  # failed attempts that were not saved
    }


def episode_entry(index: int, episode: EpisodeBuffer) -> dict:
    """The log entry of ``episode``, saved at ``index``: seed, outcome, events."""
    return {
        "episode_index": index,
        "task": episode.task,
        "seed": episode.seed,
        "success": episode.success,
        "success_step": episode.success_step,
        "place_step": episode.place_step,
        "num_frames": len(episode),
        "events": [
            {"kind": e.kind, "step": e.step, "points": np.round(e.points, 5).tolist()} for e in episode.events
        ],
    }


def _comparable(features: dict) -> dict:
    from lerobot.utils.constants import DEFAULT_FEATURES

    return {
        key: (ft["dtype"], tuple(int(s) for s in ft["shape"]))
        for key, ft in features.items()
        if key not in DEFAULT_FEATURES
    }


def _check_resumable(
    meta: LeRobotDatasetMetadata, features: dict, cfg: CollectConfig, log: dict | None
) -> None:
    """Refuse to append episodes that would not match the existing dataset."""
    have, want = _comparable(meta.features), _comparable(features)
    if have != want:
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        changed = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        parts = [
            f"{what}: {keys}"
            for what, keys in (
                ("missing there", missing),
                ("not collected here", extra),
                ("another shape or dtype there", [f"{k} {have[k]} vs {want[k]}" for k in changed]),
            )
            if keys
        ]
        raise CollectError(
            f"The dataset at {meta.root} does not match this collection ({'; '.join(parts)}). Use the "
            "dataset's --cameras and --image_size, or another --root."
        )
    if meta.fps != FPS:
        raise CollectError(f"The dataset at {meta.root} has fps {meta.fps}, not MetaWorld's {FPS}.")
    if log is not None and log.get("value_maps") != cfg.map_settings():
        raise CollectError(
            f"The dataset at {meta.root} was collected with value-map settings {log.get('value_maps')}, "
            f"this run uses {cfg.map_settings()}: pass the dataset's settings (--radius, "
            "--speed_threshold, --settle_steps, --after_last), or collect into another --root and "
            "re-render the maps with `lerobot-aim-annotate --source=contacts`."
        )


def existing_dataset(
    cfg: CollectConfig, root: Path, features: dict
) -> tuple[LeRobotDatasetMetadata | None, dict]:
    """(metadata of the dataset at ``root`` to append to, or None for a new one; collection log).

    Undoes what a killed run left next to ``root`` first, then refuses a dataset that is not whole.
    """
    clean_staging(root)
    if not is_lerobot_dataset(root):
        if root.exists() and any(root.iterdir()):
            raise CollectError(
                f"{root} exists and is not a LeRobot dataset (no meta/info.json): choose another --root."
            )
        return None, new_log(cfg)
    if not cfg.resume:
        raise CollectError(
            f"A dataset already exists at {root}. Pass --resume=true to append episodes to it, or "
            "choose another --root / --repo_id."
        )
    problems = dataset_problems(root)
    if problems:
        raise CollectError(
            f"The dataset at {root} is damaged, so no episode is appended to it: {'; '.join(problems)}. A "
            "writer was probably killed while saving (lerobot-aim-collect publishes each episode whole, "
            "other tools may not). Move it away and collect into a new --root."
        )
    meta = LeRobotDatasetMetadata(cfg.repo_id, root=root)
    log = read_collect_log(root)
    _check_resumable(meta, features, cfg, log)
    if log is None:
        log = new_log(cfg)
        log["foreign"] = True  # written by another tool: its seeds are unknown
    return meta, log


def used_seeds(
    meta: LeRobotDatasetMetadata | None, log: dict, task: str, description: str, first_seed: int
) -> set:
    """Seeds of ``task`` already used in the dataset: the log's, or (a dataset another tool wrote)
    the first seeds, one per existing episode of the task."""
    if task in log["attempted_seeds"] or not log.get("foreign") or meta is None:
        return set(log["attempted_seeds"].get(task, []))
    count = sum(description in list(tasks) for tasks in meta.episodes["tasks"]) if meta.total_episodes else 0
    seeds = list(range(first_seed, first_seed + count))
    log["attempted_seeds"][task] = seeds
    return set(seeds)


def next_seed(used: set, start: int) -> int:
    """The first seed from ``start`` on that is not in ``used``."""
    seed = start
    while seed in used:
        seed += 1
    return seed
