"""Success on MetaWorld: AIM (intent_causal, wam, no_value, + GRPO) against LeRobot's ACT and Diffusion Policy.

    python -m benchmarks.success                                    # the CPU suite below, 75 min on 2 cores
    python -m benchmarks.success --tasks easy --episodes 50 --samples 400000 --device cuda   # a GPU, hours

One `lerobot-aim-collect` dataset; every method trains with `lerobot-train` on it for the same number
of samples (steps x batch size) and is evaluated by `lerobot-eval` on `aim_metaworld` with the same
seeds. ACT and Diffusion Policy train on a copy without the value maps and calibration
(`lerobot-edit-dataset`): they see the same three views and the state, from random ResNet-18s (no
ImageNet weights offline). Stage II (`lerobot-aim-grpo`) post-trains the intent-causal model on the
same tasks. Every stage keeps its output and is skipped when rerun, and an interrupted training run
resumes from its last checkpoint, so the command is resumable.

Writes ``results/success_<tasks>_<device>.{json,md,png}``: success per method, per difficulty group
and per task, wall times, seeds, budget and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import RESULTS, device_tag, write
from lerobot_aim.data import schema
from lerobot_aim.envs.metaworld_env import difficulty_groups, resolve_tasks

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CPU_SUITE = "button-press-v3,drawer-close-v3,plate-slide-v3"
AIM = [f"--config_path={ROOT / 'configs' / 'aim_tiny.json'}"]
# Baselines: the budget is a few thousand samples, so both get AIM's short warm-up and a learning
# rate suited to training from scratch; everything else is LeRobot's default.
METHODS = {
    "aim_intent_causal": AIM,
    "aim_wam": [*AIM, "--policy.attention_mode=wam"],
    "aim_no_value": [*AIM, "--policy.attention_mode=no_value"],
    "act": ["--policy.type=act", "--policy.pretrained_backbone_weights=null", "--policy.chunk_size=16",
            "--policy.n_action_steps=8", "--policy.dim_model=256", "--policy.dim_feedforward=1024",
            "--policy.optimizer_lr=1e-4", "--policy.optimizer_lr_backbone=1e-4"],
    "diffusion": ["--policy.type=diffusion", "--policy.pretrained_backbone_weights=null",
                  "--policy.use_group_norm=true", "--policy.horizon=16", "--policy.n_action_steps=8",
                  "--policy.drop_n_last_frames=7", "--policy.down_dims=[128,256,512]",
                  "--policy.noise_scheduler_type=DDIM", "--policy.num_inference_steps=10",
                  "--policy.scheduler_warmup_steps=50"],
}  # fmt: skip
GRPO = "aim_intent_causal_grpo"
# Reference rows, taken from the literature and not run here: SmolVLA paper, table 2 (MetaWorld MT50,
# 10 trials per task), success (%) per difficulty group and the MT50 average.
LITERATURE = {
    "Diffusion Policy": {"easy": 23.1, "medium": 10.7, "hard": 1.9, "very_hard": 6.1, "MT50": 10.5},
    "TinyVLA": {"easy": 77.6, "medium": 21.5, "hard": 11.4, "very_hard": 15.8, "MT50": 31.6},
    "pi0 3.5B": {"easy": 80.4, "medium": 40.9, "hard": 36.7, "very_hard": 44.0, "MT50": 50.5},
    "SmolVLA 0.45B": {"easy": 82.5, "medium": 41.8, "hard": 45.0, "very_hard": 60.0, "MT50": 57.3},
}


class Bench:
    """Runs the stages of one benchmark folder, each once, and keeps their wall times in ``times.json``."""

    def __init__(self, out: Path):
        self.out = out
        self.times_file = out / "times.json"
        self.times = json.loads(self.times_file.read_text()) if self.times_file.is_file() else {}

    def run(self, stage: str, cmd: list[str]) -> None:
        """Run a CLI with its output in ``logs/<stage>.log``; the wall time adds up over resumed runs."""
        log = self.out / "logs" / f"{stage}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        with log.open("a") as sink:
            code = subprocess.run(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT).returncode
        self.times[stage] = self.times.get(stage, 0.0) + time.time() - start
        self.times_file.write_text(json.dumps(self.times, indent=2))
        if code:
            raise SystemExit(f"{stage} failed (exit {code}): {' '.join(cmd)}\nsee {log}")


def train_command(train_dir: Path, fresh: list[str]) -> list[str] | None:
    """The lerobot-train command for ``train_dir``: None when done, a resume when it was interrupted."""
    if (train_dir / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file():
        last = (train_dir / "checkpoints" / "last").resolve()
        config = json.loads((last / "pretrained_model" / "train_config.json").read_text())
        if int(last.name) >= config["steps"]:
            return None
        return [str(BIN / "lerobot-train"), f"--config_path={last / 'pretrained_model' / 'train_config.json'}",
                "--resume=true"]  # fmt: skip
    shutil.rmtree(train_dir, ignore_errors=True)  # started but never checkpointed: start again
    return [str(BIN / "lerobot-train"), *fresh, f"--output_dir={train_dir}"]


def baseline_dataset_edit(info: dict, root: Path, new_root: Path) -> list[str]:
    """`lerobot-edit-dataset` dropping what only AIM reads (value maps, calibration, contact signals)."""
    keep = {"observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"}
    drop = [k for k in info["features"] if k not in keep and not k.startswith(schema.IMAGES_PREFIX)]
    return [str(BIN / "lerobot-edit-dataset"), "--repo_id=local/bench", f"--root={root}",
            "--new_repo_id=local/bench_images", f"--new_root={new_root}", "--operation.type=remove_feature",
            f"--operation.feature_names={json.dumps(drop)}"]  # fmt: skip


def success_by_task(eval_info: dict, groups: dict[str, list[str]]) -> dict[str, float]:
    """Task name -> success (%) from lerobot-eval's ``per_task`` entries (group, index in the group)."""
    out = {}
    for entry in eval_info["per_task"]:
        successes = entry["metrics"]["successes"]
        out[groups[entry["task_group"]][entry["task_id"]]] = 100.0 * sum(successes) / len(successes)
    return out


def by_difficulty(per_task: dict[str, float]) -> dict[str, float]:
    """Mean success of the tasks of each MetaWorld difficulty group present (equal episodes per task)."""
    difficulty = {task: group for group, tasks in difficulty_groups().items() for task in tasks}
    out: dict[str, list[float]] = {}
    for task, success in per_task.items():
        out.setdefault(difficulty[task], []).append(success)
    return {group: sum(v) / len(v) for group, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", default=CPU_SUITE, help="MetaWorld tasks and/or difficulty groups, comma-separated"
    )
    parser.add_argument("--episodes", type=int, default=20, help="demonstrations per task")
    parser.add_argument("--samples", type=int, default=9600, help="training samples seen by every method")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--eval_episodes", type=int, default=10, help="per task")
    parser.add_argument("--episode_length", type=int, default=150)
    parser.add_argument(
        "--image_size", type=int, default=64, help="rendered views (AIM's tiny preset resizes to 32)"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--grpo_iterations", type=int, default=4, help="Stage II on aim_intent_causal (0: none)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "bench_success")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    groups = resolve_tasks(args.tasks)
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    out = args.output_dir.resolve()
    data, images_only = out / "data", out / "data_images"
    bench = Bench(out)
    eval_seed = args.seed + 100_000
    env = ["--env.type=aim_metaworld", f"--env.task={args.tasks}", f"--env.episode_length={args.episode_length}",
           f"--env.observation_height={args.image_size}", f"--env.observation_width={args.image_size}"]  # fmt: skip
    steps = args.samples // args.batch_size
    with_grpo = args.grpo_iterations > 0 and "aim_intent_causal" in methods
    progress = tqdm(total=2 + 2 * len(methods) + 2 * with_grpo, desc="benchmark stages")

    def stage(name: str) -> None:
        progress.set_postfix_str(name)

    stage("collect")
    if not (data / "meta" / "info.json").is_file():
        bench.run("collect", [str(BIN / "lerobot-aim-collect"), "--repo_id=local/bench", f"--root={data}",
                  f"--task={args.tasks}", f"--num_episodes={args.episodes}", f"--seed={args.seed}",
                  f"--image_size={args.image_size}", "--max_steps=300"])  # fmt: skip
    progress.update()
    stage("baseline dataset")
    if not (images_only / "meta" / "info.json").is_file():
        shutil.rmtree(images_only, ignore_errors=True)
        info = json.loads((data / "meta" / "info.json").read_text())
        bench.run("edit_dataset", baseline_dataset_edit(info, data, images_only))
    progress.update()

    def train(name: str, flags: list[str]) -> Path:
        stage(f"train {name}")
        train_dir = out / "train" / name
        dataset = ["--dataset.repo_id=local/bench", f"--dataset.root={data}"] if name.startswith("aim") else [
            "--dataset.repo_id=local/bench_images", f"--dataset.root={images_only}"]  # fmt: skip
        fresh = [*flags, *dataset, f"--steps={steps}", f"--batch_size={args.batch_size}", f"--save_freq={steps // 4}",
                 "--log_freq=50", "--num_workers=2", f"--policy.device={args.device}", "--policy.push_to_hub=false",
                 "--wandb.enable=false", f"--seed={args.seed}"]  # fmt: skip
        if cmd := train_command(train_dir, fresh):
            bench.run(f"train_{name}", cmd)
        progress.update()
        return train_dir / "checkpoints" / "last" / "pretrained_model"

    def evaluate(name: str, checkpoint: Path) -> dict:
        stage(f"eval {name}")
        folder = out / "eval" / name
        if not (folder / "eval_info.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            bench.run(f"eval_{name}", [str(BIN / "lerobot-eval"), f"--policy.path={checkpoint}", *env,
                      f"--eval.n_episodes={args.eval_episodes}", f"--eval.batch_size={min(10, args.eval_episodes)}",
                      "--eval.use_async_envs=false", f"--policy.device={args.device}", f"--output_dir={folder}",
                      f"--seed={eval_seed}"])  # fmt: skip
        progress.update()
        info = json.loads((folder / "eval_info.json").read_text())
        per_task = success_by_task(info, groups)
        return {"method": name, "success": info["overall"]["pc_success"], "per_group": by_difficulty(per_task),
                "per_task": per_task, "eval_episodes": info["overall"]["n_episodes"],
                "train_s": bench.times.get(f"train_{name}"), "eval_s": bench.times.get(f"eval_{name}")}  # fmt: skip

    rows = [evaluate(name, train(name, METHODS[name])) for name in methods]
    if with_grpo:
        stage("GRPO")
        grpo = out / "train" / GRPO
        last = grpo / "checkpoints" / "last"
        done = last.exists() and int(last.resolve().name) >= args.grpo_iterations
        if not done:
            bench.run(f"train_{GRPO}", [str(BIN / "lerobot-aim-grpo"),
                      f"--policy.path={out / 'train' / 'aim_intent_causal' / 'checkpoints' / 'last' / 'pretrained_model'}",
                      *env, f"--output_dir={grpo}", f"--iterations={args.grpo_iterations}", "--group_size=4",
                      "--num_initial_states=2", "--save_every=1", f"--seed={args.seed}",
                      f"--resume={str(last.exists()).lower()}"])  # fmt: skip
        progress.update()
        rows.append(evaluate(GRPO, last / "pretrained_model"))
    progress.close()

    name = f"success_{args.tasks.replace(',', '+')}_{device_tag(args.device)}"
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "tasks": groups, "train_steps": steps,
              "eval_seed": eval_seed, "times_s": bench.times, "rows": rows}  # fmt: skip
    path = write(name, result, table(rows, args, steps, eval_seed))
    plot(rows, RESULTS / f"{name}.png")
    print(path.read_text())
    print(f"written to {path}")


def wilson_interval(success_pc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval (%) of a success rate measured on ``n`` episodes."""
    p = success_pc / 100
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = 100 * (centre - half) / (1 + z * z / n), 100 * (centre + half) / (1 + z * z / n)
    return max(0.0, low), min(100.0, high)


def table(rows: list[dict], args, steps: int, eval_seed: int) -> str:
    tasks = list(rows[0]["per_task"])
    group_names = list(rows[0]["per_group"])
    head = ["method", "success (%)", "95% interval", *(f"{g} (%)" for g in group_names), *tasks, "train (s)",
            "eval (s)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "" if v is None else f"{v:.0f}"  # noqa: E731
    for r in rows:
        low, high = wilson_interval(r["success"], r["eval_episodes"])
        cells = [r["method"], f"{r['success']:.1f}", f"{low:.0f}-{high:.0f}",
                 *(f"{r['per_group'][g]:.1f}" for g in group_names), *(f"{r['per_task'][t]:.0f}" for t in tasks),
                 fmt(r["train_s"]), fmt(r["eval_s"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for method, groups in LITERATURE.items():
        cells = [f"{method} (literature, MT50 average {groups['MT50']})", "", "",
                 *(f"{groups[g]:.1f}" for g in group_names), *([""] * len(tasks)), "", ""]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"\nTasks `{args.tasks}`; {args.episodes} scripted demonstrations per task (seed {args.seed}); "
        f"{steps * args.batch_size} training samples per method ({steps} steps x batch {args.batch_size}); "
        f"{args.eval_episodes} evaluation episodes per task of at most {args.episode_length} steps, lerobot-eval "
        f"seeds from {eval_seed}; views rendered at {args.image_size}x{args.image_size}. "
        f"{GRPO}: {args.grpo_iterations} GRPO iterations (group 4, 2 initial states, tasks in turn) from "
        "aim_intent_causal. Per-method flags: `benchmarks/success.py` METHODS. Train and eval times are wall "
        "times of the whole lerobot-train / lerobot-eval command (start-up, data loading and videos included). "
        "Literature rows: SmolVLA paper, table 2, MetaWorld MT50 with 10 trials per task and each method's own "
        "budget; their difficulty-group columns average that group's tasks, not only this suite's."
    )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = ["overall", *rows[0]["per_task"]]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(1.6 * len(columns) + 2, 3.2))
    for i, r in enumerate(rows):
        values = [r["success"], *r["per_task"].values()]
        ax.bar(np.arange(len(columns)) + i * width, values, width, label=r["method"])
    ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns)
    ax.set(ylabel="success (%)", ylim=(0, 100))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
