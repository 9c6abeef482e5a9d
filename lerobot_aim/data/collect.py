"""``lerobot-aim-collect``: scripted MetaWorld demonstrations written as a value-map LeRobotDataset.

Runs MetaWorld's scripted experts (``metaworld.policies``) through the ``aim_metaworld`` env
(:class:`lerobot_aim.envs.AIMMetaWorldEnv`: a head and two hand-mounted cameras, per-step calibration
and contact signals) and writes, per step, everything AIM trains on (:mod:`lerobot_aim.data.schema`):

- ``observation.images.<cam>``: the camera frames (videos), the head camera first;
- ``observation.value_maps.<cam>``: the value map of each camera (videos, grey in 3 channels);
- ``observation.state`` (hand xyz, finger opening) and ``action`` (the executed, clipped action);
- ``observation.camera.<cam>.intrinsics`` / ``.extrinsics``: that step's calibration (the wrist
  cameras move) of the image as stored (the head camera's 180-degree rotation folded in);
- the raw annotation signals (``observation.ee_position``, ``observation.gripper_closed``,
  ``annotation.pad_contact``, ``annotation.object_position``, ``annotation.contact_points``,
  ``annotation.support_points``), so that ``lerobot-aim-annotate --source=contacts`` can re-render
  the maps later (another ``--radius``, other thresholds) without the simulator;
- the task string: LeRobot's ``TASK_DESCRIPTIONS`` wording (e.g. "Press a button").

Value maps show the NEXT interaction region, so each episode is simulated and buffered whole
(:mod:`lerobot_aim.data.expert_episodes`), its events are found once it has ended, and only then are
its frames added and the episode saved. Events follow the design (``DESIGN.md``, "Value maps (ASVM)") and
``lerobot-aim-annotate --source=contacts``: a grasp at the first step the gripper is closing with both
fingers on the object (region: the gripper-object contact points), a placement once the released
object's centre of mass has stayed slower than ``--speed_threshold`` for ``--settle_steps`` steps
(region: the object-support contact points), and for tasks without a grasp the first gripper-object
contact. Each step's region is projected with that step's calibration and drawn as a Gaussian of
world radius ``--radius`` (:func:`lerobot_aim.asvm.render.render_value_map`).

MetaWorld's experts never let go of what they carry: they hold it at the goal (which, for
pick-place, is a point in the air). For the pick-and-place tasks of
:data:`lerobot_aim.data.configs.PLACE_TASKS` the collector
therefore appends a scripted placement once the task has succeeded (``--place_after_success``): it
lowers the held object until it touches a support, opens the gripper, lifts the hand and records
until the object has come to rest, which gives the episode its place event. Those frames come after
the success, which LeRobot's MetaWorld evaluation never reaches (episodes end at the first success).

Flags are :class:`lerobot_aim.data.configs.CollectConfig`. Example::

    lerobot-aim-collect --repo_id=me/aim_metaworld_easy --task=easy --num_episodes=50 \\
        --image_size=128 --root=data/aim_metaworld_easy

Each episode is saved into a staged copy of the dataset and published by renaming it into place
(:mod:`lerobot_aim.data.publish`): whatever ends the run (an error, Ctrl-C, SIGTERM, SIGKILL, power
loss), the folder at ``--root`` holds a whole dataset with every episode saved before; only the
episode in progress is lost. ``--resume=true`` (default) appends to an existing dataset at ``--root``
(after removing what a killed run left next to it, and refusing a dataset that is not whole), skipping
the seeds already used: rerun the same command after a crash to add the episodes still missing (with
``--num_episodes`` set to how many more to add per task). Seeds, outcomes and events of every episode
are logged in ``meta/aim_collect.json``, published with the episode.
"""

import logging
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lerobot.configs import parser
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from lerobot_aim.cli import run_command
from lerobot_aim.data import schema
from lerobot_aim.data.collect_log import (
    COLLECT_LOG,
    episode_entry,
    existing_dataset,
    next_seed,
    read_collect_log,
    used_seeds,
    write_collect_log,
)
from lerobot_aim.data.configs import COLLECT_COMMAND, PLACE_TASKS, CollectConfig
from lerobot_aim.data.dataset_io import (
    check_value_map_info,
    no_datasets_progress_bars,
    quiet_libav,
    resolve_root,
)
from lerobot_aim.data.errors import CollectError
from lerobot_aim.data.expert_episodes import FPS, EpisodeBuffer, episode_events, record_episode, value_maps_of
from lerobot_aim.data.integrity import is_lerobot_dataset
from lerobot_aim.data.publish import staged_update
from lerobot_aim.envs.configuration import ACTION_DIM, STATE_DIM, parse_cameras

logger = logging.getLogger(__name__)

COLLECT_STAGING = "aim-collect"  # staging folders: .<root name>.aim-collect-<id>.tmp
ROBOT_TYPE = "sawyer"
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper_opening"]
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]


def collect_features(cameras: list[tuple[str, str]], height: int, width: int) -> dict:
    """LeRobot features of a collected dataset: images, value maps, calibration, state, action, signals.

    ``cameras``: ``(name, mujoco_camera)`` pairs, head first (see :func:`parse_cameras`).
    """
    from lerobot_aim.envs.metaworld_contacts import MAX_CONTACT_POINTS

    names = [name for name, _ in cameras]
    features: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": list(STATE_NAMES)},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": list(ACTION_NAMES)},
    }
    for name in names:
        features[schema.image_key(name)] = {
            "dtype": "video",
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
        }
    features.update(schema.value_map_features(names, height, width, head_camera=names[0]))
    features.update(schema.calibration_features(names))
    features.update(
        schema.annotation_signal_features(
            n_arms=1, pads_per_arm=2, max_contact_points=MAX_CONTACT_POINTS, with_ee_position=True
        )
    )
    return features


# ── The dataset ─────────────────────────────────────────────────────────


@dataclass
class TaskStats:
    attempts: int = 0
    successes: int = 0
    kept: int = 0
    frames: int = 0
    sim_seconds: float = 0.0  # simulation and rendering
    write_seconds: float = 0.0  # value maps, add_frame and video encoding

    @property
    def seconds_per_episode(self) -> float:
        return (self.sim_seconds + self.write_seconds) / max(self.attempts, 1)


@dataclass
class CollectSummary:
    """What :func:`collect_dataset` did."""

    repo_id: str
    root: str
    resumed: bool = False
    episodes_written: int = 0  # by this run
    total_episodes: int = 0  # in the dataset afterwards
    frames_written: int = 0
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (task, seed) of dropped attempts
    tasks: dict[str, TaskStats] = field(default_factory=dict)
    events: Counter = field(default_factory=Counter)  # kind -> count, in the episodes written
    episodes_without_events: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def add_episode(self, index: int, episode: EpisodeBuffer) -> None:
        """Count an episode published at ``index``."""
        self.episodes_written += 1
        self.frames_written += len(episode)
        self.total_episodes = index + 1
        self.events.update(event.kind for event in episode.events)
        if not episode.events:
            self.episodes_without_events.append(index)

    def table(self) -> str:
        """Per task: attempts, successes, episodes kept, seconds per attempt (simulation + writing)."""
        rows = [f"{'task':28s} attempts success kept frames/ep  s/episode (sim + write)"]
        for task, s in self.tasks.items():
            n = max(s.attempts, 1)
            rows.append(
                f"{task:28s} {s.attempts:8d} {s.successes:7d} {s.kept:4d} {s.frames / max(s.kept, 1):9.1f}"
                f"  {s.seconds_per_episode:9.2f} ({s.sim_seconds / n:.2f} + {s.write_seconds / n:.2f})"
            )
        return "\n".join(rows)


def collect_dataset(cfg: CollectConfig) -> CollectSummary:
    """Collect ``cfg.num_episodes`` episodes per task into the dataset at ``cfg.root`` (see module doc).

    Raises :class:`CollectError` on bad inputs before anything is written. Each episode is written
    into a staged copy of the dataset and published by renaming (:mod:`lerobot_aim.data.publish`):
    whatever happens, even SIGKILL, the folder at ``cfg.root`` holds the episodes saved so far (or
    nothing, before the first one).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    root = resolve_root(cfg.root, cfg.repo_id)
    cameras = parse_cameras(cfg.cameras)
    features = collect_features(cameras, cfg.image_size, cfg.image_size)
    summary = CollectSummary(repo_id=cfg.repo_id, root=str(root))

    with quiet_libav(), no_datasets_progress_bars():
        meta, log = existing_dataset(cfg, root, features)
        summary.resumed = meta is not None
        summary.total_episodes = meta.total_episodes if meta is not None else 0
        if meta is not None:
            logger.info("Appending to %s (%d episodes).", root, meta.total_episodes)
        run = _Collection(cfg, root, features, cameras, log, summary)
        progress = tqdm(total=len(cfg.tasks) * cfg.num_episodes, desc="Collecting", unit="episode")
        try:
            for task in cfg.tasks:
                run.collect_task(task, meta, progress)
        finally:
            progress.close()
    summary.seconds = time.perf_counter() - started
    logger.info(
        "%s at %s: %d episode(s) written (%d frames), %d in the dataset, %d attempt(s) dropped, events %s, "
        "in %.1f s.\n%s",
        cfg.repo_id,
        root,
        summary.episodes_written,
        summary.frames_written,
        summary.total_episodes,
        len(summary.dropped),
        dict(summary.events),
        summary.seconds,
        summary.table(),
    )
    if cfg.push_to_hub and summary.total_episodes:
        LeRobotDataset(cfg.repo_id, root=root).push_to_hub(
            tags=["AIM", "value-maps", "ASVM", "metaworld"], private=cfg.private
        )
    return summary


@dataclass
class _Collection:
    """One run of :func:`collect_dataset`: what it writes where, its log and its summary."""

    cfg: CollectConfig
    root: Path
    features: dict
    cameras: list[tuple[str, str]]  # (name, MuJoCo camera), head first
    log: dict
    summary: CollectSummary

    def collect_task(self, task: str, meta: LeRobotDatasetMetadata | None, progress) -> None:
        """Record and publish the episodes of one task."""
        from lerobot_aim.envs.metaworld_env import AIMMetaWorldEnv

        cfg, summary = self.cfg, self.summary
        stats = summary.tasks.setdefault(task, TaskStats())
        env = AIMMetaWorldEnv(
            task,
            cameras=cfg.cameras,
            observation_height=cfg.image_size,
            observation_width=cfg.image_size,
            episode_length=cfg.max_steps + cfg.max_place_steps + cfg.steps_after_success + 1,
            terminate_on_success=False,
        )
        try:
            used = used_seeds(meta, self.log, task, env.task_description, cfg.seed)
            seed = cfg.seed
            while stats.kept < cfg.num_episodes and stats.attempts < cfg.attempts_per_task:
                seed = next_seed(used, seed)
                used.add(seed)
                progress.set_postfix_str(f"{task} seed {seed}")
                episode = record_episode(env, seed, cfg)
                stats.attempts += 1
                stats.successes += episode.success
                stats.sim_seconds += episode.sim_seconds
                if not episode.success and not cfg.keep_failed:
                    self.drop(episode, "expert failed")
                    continue
                write_started = time.perf_counter()
                index = self.publish_episode(episode)
                stats.write_seconds += time.perf_counter() - write_started
                stats.kept += 1
                stats.frames += len(episode)
                summary.add_episode(index, episode)
                progress.update(1)
        finally:
            env.close()
        if stats.kept < cfg.num_episodes:
            logger.warning(
                "%s: only %d of %d episodes after %d attempts (the expert failed %d times).",
                task,
                stats.kept,
                cfg.num_episodes,
                stats.attempts,
                stats.attempts - stats.successes,
            )

    def drop(self, episode: EpisodeBuffer, reason: str) -> None:
        """Log an attempt that is not saved (its seed counts as used)."""
        logger.info(
            "Dropped %s seed %d: the expert did not succeed within %d steps.",
            episode.task,
            episode.seed,
            self.cfg.max_steps,
        )
        self.summary.dropped.append((episode.task, episode.seed))
        self.log["attempted_seeds"].setdefault(episode.task, []).append(episode.seed)
        self.log["dropped"].append({"task": episode.task, "seed": episode.seed, "reason": reason})
        if is_lerobot_dataset(self.root):  # one file, replaced atomically
            write_collect_log(self.root, self.log)

    def publish_episode(self, episode: EpisodeBuffer) -> int:
        """Save one episode in a staged copy of the dataset, with the updated log, and publish it; its index.

        The log (seed and entry of the episode) is published with the episode, so after a kill either
        both are in the dataset or neither is, and a rerun records the same seed again.
        """
        from lerobot.configs.video import RGBEncoderConfig

        cfg, log = self.cfg, self.log
        preset = cfg.preset if cfg.preset not in ("", "none", "None") else None
        encoder = RGBEncoderConfig(vcodec=cfg.vcodec, crf=cfg.crf, g=2, preset=preset)
        with staged_update(self.root, COLLECT_STAGING) as staged:
            if staged.exists():
                dataset = LeRobotDataset.resume(
                    cfg.repo_id, root=staged, rgb_encoder=encoder, encoder_threads=1
                )
            else:
                dataset = LeRobotDataset.create(
                    repo_id=cfg.repo_id,
                    fps=FPS,
                    features=self.features,
                    root=staged,
                    robot_type=ROBOT_TYPE,
                    use_videos=True,
                    rgb_encoder=encoder,
                    encoder_threads=1,
                )
            index = _save_episode(dataset, episode, self.cameras, cfg)
            dataset.finalize()
            check_value_map_info(staged, self.features)
            shutil.rmtree(staged / "images", ignore_errors=True)  # LeRobot's emptied frame folders
            log["attempted_seeds"].setdefault(episode.task, []).append(episode.seed)
            log["episodes"].append(episode_entry(index, episode))
            try:
                write_collect_log(staged, log)
            except BaseException:
                log["attempted_seeds"][episode.task].pop()
                log["episodes"].pop()
                raise
        return index


def _save_episode(
    dataset: LeRobotDataset, episode: EpisodeBuffer, cameras: list[tuple[str, str]], cfg: CollectConfig
) -> int:
    """Find the episode's events, render its value maps, add its frames and save it; its index."""
    signals = episode.stacked_signals()
    episode.events = episode_events(signals, FPS, cfg.speed_threshold, cfg.settle_steps)
    maps = value_maps_of(episode, cameras, cfg.image_size, cfg.image_size, cfg)
    index = dataset.meta.total_episodes
    for t, frame in enumerate(episode.frames):
        dataset.add_frame(
            {
                **frame,
                **maps[t],
                **{key: values[t] for key, values in signals.items()},
                "task": episode.task_description,
            }
        )
    # Encode in this process: a process pool per episode costs more than it saves on small episodes.
    dataset.save_episode(parallel_encoding=False)
    return index


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


@parser.wrap()
def collect(cfg: CollectConfig) -> CollectSummary:
    """``lerobot-aim-collect``: :func:`collect_dataset` with the flags of :class:`CollectConfig`."""
    return collect_dataset(cfg)


def main() -> None:
    """Console entry point (``lerobot-aim-collect``)."""
    from lerobot.utils.utils import init_logging

    init_logging()
    # A job scheduler's SIGTERM ends the run like Ctrl-C: the staged episode is removed, the dataset
    # stays as published (even SIGKILL leaves it whole: see lerobot_aim.data.publish).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    run_command(collect, COLLECT_COMMAND)


if __name__ == "__main__":
    main()


__all__ = [
    "COLLECT_LOG",
    "PLACE_TASKS",
    "CollectConfig",
    "CollectError",
    "CollectSummary",
    "EpisodeBuffer",
    "collect_dataset",
    "collect_features",
    "episode_events",
    "read_collect_log",
    "record_episode",
    "value_maps_of",
]
