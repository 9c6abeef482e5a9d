"""Collection speed of `lerobot-aim-collect`: steps/s with three views (target: >= 20 steps/s at 128x128).

    python -m benchmarks.collect_speed [--task=button-press-v3] [--episodes=3] [--image_size=128]

Reports simulation + rendering steps/s and end-to-end steps/s (with value maps, LeRobot's frame
writing and video encoding). Writes ``results/collect_speed_<size>_<device>.{json,md}``.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lerobot.configs import parser

from benchmarks.common import BenchmarkInputError, check_at_least_one, device_tag, write
from lerobot_aim.cli import run_command


@dataclass
class CollectSpeedConfig:
    # One MetaWorld MT50 task (not a group).
    task: str = "button-press-v3"
    # Episodes collected.
    episodes: int = 3
    # Height and width of each view (even, for the video encoder).
    image_size: int = 128

    def __post_init__(self) -> None:
        from lerobot_aim.envs.metaworld_env import resolve_tasks

        try:
            tasks = resolve_tasks(self.task)
        except ValueError as error:
            raise BenchmarkInputError(f"--task={self.task}: {error}") from None
        if list(tasks.values()) != [[self.task]]:
            raise BenchmarkInputError(
                f"--task={self.task}: pass one MT50 task (e.g. button-press-v3), not a group."
            )
        check_at_least_one(episodes=self.episodes, image_size=self.image_size)
        if self.image_size % 2:
            raise BenchmarkInputError(f"--image_size={self.image_size}: must be even (video).")


@parser.wrap()
def collect_speed(cfg: CollectSpeedConfig) -> dict:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from lerobot_aim.data.collect import CollectConfig, collect_dataset

    with tempfile.TemporaryDirectory() as tmp:
        summary = collect_dataset(
            CollectConfig(
                repo_id="local/speed",
                root=str(Path(tmp) / "data"),
                task=cfg.task,
                num_episodes=cfg.episodes,
                image_size=cfg.image_size,
            )
        )
    stats = summary.tasks[cfg.task]
    result = {
        "task": cfg.task,
        "episodes": stats.kept,
        "frames": stats.frames,
        "image_size": cfg.image_size,
        "views": 3,
        "sim_render_steps_per_s": stats.frames / stats.sim_seconds,
        "end_to_end_steps_per_s": stats.frames / (stats.sim_seconds + stats.write_seconds),
    }
    table = (
        "| task | views | size | frames | sim + render (steps/s) | end to end (steps/s) |\n|---|---|---|---|---|---|\n"
        f"| {cfg.task} | 3 | {cfg.image_size} | {stats.frames} | {result['sim_render_steps_per_s']:.1f} | "
        f"{result['end_to_end_steps_per_s']:.1f} |"
    )
    path = write(f"collect_speed_{cfg.image_size}_{device_tag('cpu')}", result, table)
    print(table)
    print(f"written to {path}")
    return result


def main() -> None:
    run_command(collect_speed, "benchmarks.collect_speed")


if __name__ == "__main__":
    main()
