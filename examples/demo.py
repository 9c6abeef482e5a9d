"""`make demo`: AIM end to end on a MetaWorld task, on a CPU, with LeRobot's own tools.

1. collect   `lerobot-aim-collect`: scripted-expert episodes with three views and value maps
2. train     `lerobot-train --config_path=configs/aim_tiny.json` (Stage I)
3. evaluate  `lerobot-eval --env.type=aim_metaworld`, with a video of the imagined future
4. GRPO      `lerobot-aim-grpo` (Stage II: action stream only, value-map dense reward)
5. evaluate  the GRPO checkpoint on the same seeds
6. report    outputs/demo/report.md: success rates, the loss curve, the prediction video

    python examples/demo.py [--quick=true] [--output_dir=outputs/demo] [--task=button-press-v3] [--seed=0]

``--quick=true`` runs a few steps of each stage (what CI runs); the numbers it reports are whatever was
measured, with the settings in the report.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lerobot.configs import parser

from lerobot_aim.cli import InputError, run_command

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Budget:
    episodes: int
    collect_max_steps: int
    train_steps: int
    batch_size: int
    eval_episodes: int
    episode_length: int
    grpo_iterations: int
    group_size: int


FULL = Budget(
    episodes=30,
    collect_max_steps=200,
    train_steps=600,
    batch_size=16,
    eval_episodes=10,
    episode_length=150,
    grpo_iterations=2,
    group_size=4,
)
QUICK = Budget(
    episodes=2,
    collect_max_steps=200,
    train_steps=4,
    batch_size=4,
    eval_episodes=2,
    episode_length=10,
    grpo_iterations=1,
    group_size=2,
)


@dataclass
class DemoConfig:
    # A few steps per stage (what CI runs); its numbers are not meaningful.
    quick: bool = False
    # Where the dataset, checkpoints, evaluations, logs and report go (replaced if it holds an earlier demo).
    output_dir: Path = ROOT / "outputs" / "demo"
    # MetaWorld task of every stage.
    task: str = "button-press-v3"
    # Seed of collection, training and GRPO (evaluation uses seed + 1000).
    seed: int = 0


class DemoConfigError(InputError):
    """A setting of the demo that cannot work, with what to pass instead."""


def run(stage: str, cmd: list[str], log: Path) -> str:
    """Run a CLI, showing its output live and keeping it in ``log``."""
    print(f"\n=== {stage} ===\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    with (
        log.open("w") as sink,
        subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
    ):
        for line in proc.stdout:
            sink.write(line)
            if not line.startswith(
                ("WARNING:root:No accelerated", "WARNING:lerobot.configs.policies:Device")
            ):
                sys.stdout.write(line)
    if proc.returncode:
        raise SystemExit(f"{stage} failed (exit {proc.returncode}); see {log}")
    print(f"--- {stage}: {time.time() - start:.0f} s", flush=True)
    return log.read_text()


def loss_curve(train_log: str, path: Path) -> list[tuple[int, float]]:
    """Parse lerobot-train's log lines and plot the Stage I loss."""
    points = [(int(s), float(v)) for s, v in re.findall(r"step:(\d+)\S* .*? loss:([0-9.]+)", train_log)]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    if points:
        ax.plot(*zip(*points, strict=True), marker="o")
    ax.set(xlabel="step", ylabel="Stage I loss (rgb + map + act)", title="lerobot-train, aim_tiny")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return points


def success_rate(eval_dir: Path) -> float:
    return json.loads((eval_dir / "eval_info.json").read_text())["overall"]["pc_success"]


def fresh_output_dir(path: Path) -> Path:
    """``path`` resolved and emptied; refused if it holds something other than an earlier demo's output."""
    out = path.resolve()
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / "logs").is_dir()):
            raise DemoConfigError(
                f"--output_dir={path}: {out} exists and is not an earlier demo's output (no logs/ folder); "
                "the demo replaces its output folder, so pass a new or empty folder."
            )
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    return out


@parser.wrap()
def demo(cfg: DemoConfig) -> Path:
    """Run the five stages and write ``report.md``; returns its path."""
    budget = QUICK if cfg.quick else FULL
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = fresh_output_dir(cfg.output_dir)
    started = time.time()
    repo_id = "local/aim_demo"
    data = out / "data"
    env = [
        "--env.type=aim_metaworld",
        f"--env.task={cfg.task}",
        f"--env.episode_length={budget.episode_length}",
        "--env.observation_height=32",
        "--env.observation_width=32",
    ]

    run(
        "1/5 collect",
        [
            str(BIN / "lerobot-aim-collect"),
            f"--repo_id={repo_id}",
            f"--root={data}",
            f"--task={cfg.task}",
            f"--num_episodes={budget.episodes}",
            f"--seed={cfg.seed}",
            "--image_size=32",
            f"--max_steps={budget.collect_max_steps}",
        ],
        out / "logs" / "collect.log",
    )
    if not (data / "meta" / "info.json").is_file():
        raise SystemExit(f"The collector wrote no episode (see {out / 'logs' / 'collect.log'}).")

    train_log = run(
        "2/5 train (Stage I)",
        [
            str(BIN / "lerobot-train"),
            f"--config_path={ROOT / 'configs' / 'aim_tiny.json'}",
            f"--dataset.repo_id={repo_id}",
            f"--dataset.root={data}",
            f"--output_dir={out / 'train'}",
            f"--steps={budget.train_steps}",
            f"--batch_size={budget.batch_size}",
            f"--save_freq={budget.train_steps}",
            f"--log_freq={max(1, budget.train_steps // 20)}",
            "--num_workers=2",
            "--policy.push_to_hub=false",
            f"--seed={cfg.seed}",
            "--wandb.enable=false",
        ],
        out / "logs" / "train.log",
    )
    stage1 = out / "train" / "checkpoints" / "last" / "pretrained_model"

    def evaluate(name: str, checkpoint: Path) -> float:
        run(
            f"evaluate {name}",
            [
                str(BIN / "lerobot-eval"),
                f"--policy.path={checkpoint}",
                "--policy.save_predicted_video=true",
                *env,
                f"--eval.n_episodes={budget.eval_episodes}",
                f"--eval.batch_size={min(5, budget.eval_episodes)}",
                "--eval.use_async_envs=false",
                f"--output_dir={out / f'eval_{name}'}",
                f"--seed={cfg.seed + 1000}",
            ],
            out / "logs" / f"eval_{name}.log",
        )
        return success_rate(out / f"eval_{name}")

    stage1_success = evaluate("stage1", stage1)
    run(
        "4/5 GRPO (Stage II)",
        [
            str(BIN / "lerobot-aim-grpo"),
            f"--policy.path={stage1}",
            *env,
            f"--output_dir={out / 'grpo'}",
            f"--iterations={budget.grpo_iterations}",
            f"--group_size={budget.group_size}",
            "--num_initial_states=1",
            f"--save_every={budget.grpo_iterations}",
            f"--seed={cfg.seed}",
        ],
        out / "logs" / "grpo.log",
    )
    stage2 = out / "grpo" / "checkpoints" / "last" / "pretrained_model"
    stage2_success = evaluate("stage2", stage2)

    losses = loss_curve(train_log, out / "loss_curve.png")
    grpo_metrics = [
        json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines() if line
    ]
    videos = sorted((out / "eval_stage2" / "videos").rglob("pred_episode_*.mp4"))
    minutes = (time.time() - started) / 60
    report = out / "report.md"
    report.write_text(
        f"# AIM demo on MetaWorld `{cfg.task}`\n\n"
        f"Run {time.strftime('%Y-%m-%d %H:%M')}, {minutes:.1f} minutes on {os.cpu_count()} CPU cores"
        f"{' (quick mode: a few steps per stage, numbers are not meaningful)' if cfg.quick else ''}.\n\n"
        f"Settings: {json.dumps(asdict(budget))}\n\n"
        "| stage | success (%) | episodes |\n|---|---|---|\n"
        f"| Stage I (lerobot-train, {budget.train_steps} steps) | {stage1_success:.1f} | {budget.eval_episodes} |\n"
        f"| Stage II (lerobot-aim-grpo, {budget.grpo_iterations} iterations) | {stage2_success:.1f} | "
        f"{budget.eval_episodes} |\n\n"
        f"Stage I loss: {losses[0][1] if losses else float('nan'):.3f} at step {losses[0][0] if losses else 0} -> "
        f"{losses[-1][1] if losses else float('nan'):.3f} at step {losses[-1][0] if losses else 0}.\n\n"
        "![loss curve](loss_curve.png)\n\n"
        f"GRPO iterations: {json.dumps(grpo_metrics[-1]) if grpo_metrics else 'none'}\n\n"
        "Imagined future (left: predicted RGB, right: predicted value maps): "
        f"{', '.join(str(v.relative_to(out)) for v in videos) or 'none'}\n\n"
        f"Logs: {out / 'logs'}\n"
    )
    print(f"\nDemo done in {minutes:.1f} min. Report: {report}")
    return report


def main() -> None:
    run_command(demo, "demo")


if __name__ == "__main__":
    main()
