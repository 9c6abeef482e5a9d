"""Success on MetaWorld: AIM (intent_causal, with and without state, wam, no_value, + GRPO) against
LeRobot's ACT and Diffusion Policy, at equal inputs.

    python -m benchmarks.success                      # the CPU suite below, about 5 h on 2 cores
    python -m benchmarks.success --samples=9600 --grpo_iterations=4 --grpo_eval_episodes=20   # ~3 h
    python -m benchmarks.success --samples=400000 --eval_episodes=50 --device=cuda   # a GPU
    python -m benchmarks.success --methods='[aim_intent_causal,act]' --partial=true  # write what is done

One `lerobot-aim-collect` dataset (views rendered at ``--image_size``); every method trains with
`lerobot-train` on it for the same number of samples (steps x batch size) and is evaluated by
`lerobot-eval` on `aim_metaworld` with the same seeds. Equal inputs: every method reads the same
three views at the same stored resolution (AIM's preset runs at ``--policy.image_size=[S,S]``, so its
head view is the stored one; its T-pose canvas packs the wrist views at half size, as the paper's
model does) and ACT and Diffusion Policy read the state; AIM is run with and without
``--policy.use_state=true``. ACT and Diffusion Policy train on a copy without the value maps and
calibration (`lerobot-edit-dataset`), from random ResNet-18s (no ImageNet weights offline).

Stage II (`lerobot-aim-grpo`) post-trains the better intent-causal model (with or without state) on
pick-place-v3; it and its Stage I checkpoint are evaluated there on the same ``--grpo_eval_episodes``
seeds (before / after). Every stage keeps its output and is skipped when rerun, and an interrupted
training run resumes from its last checkpoint, so the command is resumable.

Writes ``results/success_<suite>_<device>.{json,md,png}``: success per method, per difficulty group
and per task with 95% Wilson intervals, wall times, seeds, budget, the value-map schema of the
dataset, the commit and the machine; ``--partial`` writes what has finished so far.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lerobot.configs import parser

from benchmarks.common import (
    RESULTS,
    BenchmarkInputError,
    check_at_least_one,
    check_device,
    device_tag,
    write,
)
from lerobot_aim.cli import run_command
from lerobot_aim.data import schema
from lerobot_aim.envs.metaworld_env import difficulty_groups, resolve_tasks

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The three easy tasks of the first comparison, pick-place-v3, and two contact-rich pick-and-place
# tasks of the medium and hard groups (both with a grasp and a placement event, so that the value
# map moves from the grasp region to the goal region during the episode).
CPU_SUITE = "button-press-v3,drawer-close-v3,plate-slide-v3,pick-place-v3,bin-picking-v3,assembly-v3"
GRPO_TASK = "pick-place-v3"
# AIM's recipe on top of the tiny preset (the same for every attention mode). lr 1e-3: the preset's
# 3e-4 learns too slowly for a budget of tens of thousands of samples (see benchmarks/README.md).
AIM_RECIPE = ["--policy.optimizer_lr=1e-3", "--policy.scheduler_decay_lr=1e-4"]


def aim_flags(image_size: int, *extra: str) -> list[str]:
    return [
        f"--config_path={ROOT / 'configs' / 'aim_tiny.json'}",
        f"--policy.image_size=[{image_size},{image_size}]",
        *AIM_RECIPE,
        *extra,
    ]


def method_flags(image_size: int) -> dict[str, list[str]]:
    """lerobot-train flags of every method (the dataset, steps and batch are added per run).

    Baselines: the budget is tens of thousands of samples, so both get a short warm-up and a learning
    rate suited to training from scratch; everything else is LeRobot's default."""
    return {
        "aim_intent_causal": aim_flags(image_size),
        "aim_intent_causal_state": aim_flags(image_size, "--policy.use_state=true"),
        "aim_wam": aim_flags(image_size, "--policy.attention_mode=wam"),
        "aim_no_value": aim_flags(image_size, "--policy.attention_mode=no_value"),
        "act": [
            "--policy.type=act",
            "--policy.pretrained_backbone_weights=null",
            "--policy.chunk_size=16",
            "--policy.n_action_steps=8",
            "--policy.dim_model=256",
            "--policy.dim_feedforward=1024",
            "--policy.optimizer_lr=1e-4",
            "--policy.optimizer_lr_backbone=1e-4",
        ],
        "diffusion": [
            "--policy.type=diffusion",
            "--policy.pretrained_backbone_weights=null",
            "--policy.use_group_norm=true",
            "--policy.horizon=16",
            "--policy.n_action_steps=8",
            "--policy.drop_n_last_frames=7",
            "--policy.down_dims=[128,256,512]",
            "--policy.noise_scheduler_type=DDIM",
            "--policy.num_inference_steps=10",
            "--policy.scheduler_warmup_steps=50",
        ],
    }


METHODS = list(method_flags(48))
BASELINES = ("act", "diffusion")
STATE_PAIR = ("aim_intent_causal", "aim_intent_causal_state")
GRPO = "aim_grpo"
LOG_FREQ = 50
# Stage II recipe (benchmarks/README.md, from Flow-GRPO and piRL): flow-SDE noise a = 0.5, groups of
# 8 rollouts from one initial state, PPO clip 0.2 per denoising step, advantages clipped to 5, a small
# KL to the Stage I policy, the 10 denoising steps of Stage I.
GRPO_RECIPE = [
    "--group_size=8",
    "--sde_noise=0.5",
    "--clip_epsilon=0.2",
    "--ratio_level=step",
    "--advantage_clip=5.0",
    "--kl_weight=0.01",
    "--learning_rate=3e-5",
    "--minibatch_size=16",
    "--num_epochs=1",
    "--lambda_d=0.5",
    "--lambda_s=1.0",
]
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
        print(f"[{time.strftime('%H:%M:%S')}] {stage}", flush=True)
        with log.open("a") as sink:
            code = subprocess.run(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT).returncode
        self.times[stage] = self.times.get(stage, 0.0) + time.time() - start
        self.out.mkdir(parents=True, exist_ok=True)
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
        return [
            str(BIN / "lerobot-train"),
            f"--config_path={last / 'pretrained_model' / 'train_config.json'}",
            "--resume=true",
        ]
    return [str(BIN / "lerobot-train"), *fresh, f"--output_dir={train_dir}"]


def start_training(train_dir: Path, cmd: list[str]) -> None:
    """Before a fresh run, remove what a run that died before its first checkpoint left (lerobot-train
    refuses an existing output_dir without --resume)."""
    if "--resume=true" not in cmd:
        shutil.rmtree(train_dir, ignore_errors=True)


def baseline_dataset_edit(info: dict, root: Path, new_root: Path) -> list[str]:
    """`lerobot-edit-dataset` dropping what only AIM reads (value maps, calibration, contact signals)."""
    keep = {"observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"}
    drop = [k for k in info["features"] if k not in keep and not k.startswith(schema.IMAGES_PREFIX)]
    return [
        str(BIN / "lerobot-edit-dataset"),
        "--repo_id=local/bench",
        f"--root={root}",
        "--new_repo_id=local/bench_images",
        f"--new_root={new_root}",
        "--operation.type=remove_feature",
        f"--operation.feature_names={json.dumps(drop)}",
    ]


def dataset_value_map_schema(info: dict) -> dict[str, int | None]:
    """Camera -> the value-map schema version recorded in a dataset's ``info.json`` features."""
    features = info["features"]
    return {cam: schema.value_map_schema(features, cam) for cam in schema.dataset_cameras(features)}


def counts_by_task(eval_info: dict, groups: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """Task name -> (successes, episodes) from lerobot-eval's ``per_task`` entries (group, index)."""
    out = {}
    for entry in eval_info["per_task"]:
        successes = entry["metrics"]["successes"]
        out[groups[entry["task_group"]][entry["task_id"]]] = (
            int(sum(bool(s) for s in successes)),
            len(successes),
        )
    return out


def success_by_task(eval_info: dict, groups: dict[str, list[str]]) -> dict[str, float]:
    """Task name -> success (%) from lerobot-eval's ``per_task`` entries (group, index in the group)."""
    return {task: 100.0 * k / n for task, (k, n) in counts_by_task(eval_info, groups).items()}


def by_difficulty(per_task: dict[str, float]) -> dict[str, float]:
    """Mean success of the tasks of each MetaWorld difficulty group present (equal episodes per task)."""
    difficulty = {task: group for group, tasks in difficulty_groups().items() for task in tasks}
    out: dict[str, list[float]] = {}
    for task, success in per_task.items():
        out.setdefault(difficulty[task], []).append(success)
    return {group: sum(v) / len(v) for group, v in out.items()}


def wilson_interval(success_pc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval (%) of a success rate measured on ``n`` episodes."""
    p = success_pc / 100
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = 100 * (centre - half) / (1 + z * z / n), 100 * (centre + half) / (1 + z * z / n)
    # At 0% or 100% one bound equals the rate analytically; floating-point error may put it a hair past it.
    return max(0.0, min(low, success_pc)), min(100.0, max(high, success_pc))


TRAIN_LOG = re.compile(
    r"step:\S+ smpl:\S+ .*?loss:(?P<loss>[\d.eE+-]+).*?updt_s:(?P<updt>[\d.]+) data_s:(?P<data>[\d.]+)"
)
CHECKPOINT_LOG = re.compile(r"Checkpoint policy after step (?P<step>\d+)")
START_LOG = "Start offline training"


def learning_curve(log_text: str, log_freq: int, batch_size: int) -> list[dict]:
    """[{step, samples, loss, update_s, data_s}] from lerobot-train's log (one file over resumed runs).

    lerobot-train prints steps rounded to thousands ("step:1K"), so steps are counted instead: a line
    every ``log_freq`` steps from the start of each run, which is 0 for the first run and the last
    checkpoint before it for a resumed one; a later run replaces what an earlier one logged past it."""
    points: dict[int, dict] = {}
    start = step = last_checkpoint = 0
    for line in log_text.splitlines():
        if START_LOG in line:
            start = step = last_checkpoint
        elif m := CHECKPOINT_LOG.search(line):
            last_checkpoint = int(m["step"])
        elif m := TRAIN_LOG.search(line):
            step += log_freq
            points = {k: v for k, v in points.items() if k < step} if step == start + log_freq else points
            points[step] = {
                "step": step,
                "samples": step * batch_size,
                "loss": float(m["loss"]),
                "update_s": float(m["updt"]),
                "data_s": float(m["data"]),
            }
    return [points[s] for s in sorted(points)]


def best_of(rows: dict[str, dict], pair: tuple[str, str], requested: list[str] | None = None) -> str | None:
    """The method of ``pair`` with the higher overall success (the first, paper-faithful one on a tie),
    among those of the pair that were ``requested`` (default: both); None until each has its row."""
    candidates = [name for name in pair if requested is None or name in requested]
    if not candidates or not all(name in rows for name in candidates):
        return None
    return max(candidates, key=lambda name: (rows[name]["success"], name == pair[0]))


def git_commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "lerobot_aim", "benchmarks/success.py")),
    }


@dataclass
class SuccessConfig:
    # MetaWorld tasks and/or difficulty groups, comma-separated (default: the CPU suite of six tasks).
    tasks: str = CPU_SUITE
    # Scripted demonstrations per task.
    episodes: int = 30
    # Training samples (steps x batch size) seen by every method.
    samples: int = 19200
    batch_size: int = 16
    # lerobot-eval episodes per task (the same seeds for every method).
    eval_episodes: int = 20
    eval_batch_size: int = 10
    # Steps per evaluation episode at most.
    episode_length: int = 200
    # Size of every view, for every method (AIM: a multiple of 16).
    image_size: int = 48
    # Methods to train and evaluate, in this order.
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    # GRPO iterations of Stage II on pick-place-v3 (0: no Stage II).
    grpo_iterations: int = 12
    # Groups of 8 rollouts per GRPO iteration.
    grpo_initial_states: int = 2
    # pick-place-v3 episodes, before and after Stage II.
    grpo_eval_episodes: int = 50
    device: str = "cpu"
    # Where the dataset, checkpoints, evaluations and logs are kept (rerun to resume).
    output_dir: Path = ROOT / "outputs" / "bench_success"
    seed: int = 0
    # Write the results of the stages done so far and run nothing.
    partial: bool = False

    def __post_init__(self) -> None:
        check_device(self.device)
        check_at_least_one(
            episodes=self.episodes,
            samples=self.samples,
            batch_size=self.batch_size,
            eval_episodes=self.eval_episodes,
            eval_batch_size=self.eval_batch_size,
            episode_length=self.episode_length,
            grpo_initial_states=self.grpo_initial_states,
            grpo_eval_episodes=self.grpo_eval_episodes,
        )
        if unknown := sorted(set(self.methods) - set(METHODS)):
            raise BenchmarkInputError(f"--methods: unknown {unknown}; choose from {METHODS}.")
        if self.image_size % 16:
            raise BenchmarkInputError(f"--image_size={self.image_size}: AIM needs a multiple of 16, e.g. 48.")
        if self.samples < 4 * self.batch_size:
            raise BenchmarkInputError(
                f"--samples={self.samples}: at least 4 batches ({4 * self.batch_size})."
            )
        try:
            resolve_tasks(self.tasks)
        except (KeyError, ValueError) as error:
            raise BenchmarkInputError(f"--tasks={self.tasks}: {error}") from None


@parser.wrap()
def success(args: SuccessConfig) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    groups = resolve_tasks(args.tasks)
    methods = args.methods
    flags = method_flags(args.image_size)
    out = Path(args.output_dir).resolve()
    data, images_only = out / "data", out / "data_images"
    bench = Bench(out)
    eval_seed = args.seed + 100_000
    steps = args.samples // args.batch_size
    rows: dict[str, dict] = {}

    def env_flags(task: str) -> list[str]:
        return [
            "--env.type=aim_metaworld",
            f"--env.task={task}",
            f"--env.episode_length={args.episode_length}",
            f"--env.observation_height={args.image_size}",
            f"--env.observation_width={args.image_size}",
        ]

    if not args.partial:
        if not (data / "meta" / "info.json").is_file():
            bench.run(
                "collect",
                [
                    str(BIN / "lerobot-aim-collect"),
                    "--repo_id=local/bench",
                    f"--root={data}",
                    f"--task={args.tasks}",
                    f"--num_episodes={args.episodes}",
                    f"--seed={args.seed}",
                    f"--image_size={args.image_size}",
                    "--max_steps=300",
                ],
            )
        if not (images_only / "meta" / "info.json").is_file():
            shutil.rmtree(images_only, ignore_errors=True)
            bench.run(
                "edit_dataset",
                baseline_dataset_edit(
                    json.loads((data / "meta" / "info.json").read_text()), data, images_only
                ),
            )
    info = json.loads((data / "meta" / "info.json").read_text())
    map_schema = dataset_value_map_schema(info)
    if any(v != schema.SCHEMA_VERSION for v in map_schema.values()):
        raise SystemExit(
            f"The dataset's value maps are of schema {map_schema}, not {schema.SCHEMA_VERSION}: "
            "results on them would be made on wrong maps. Collect it again."
        )

    def checkpoint(name: str) -> Path:
        return out / "train" / name / "checkpoints" / "last" / "pretrained_model"

    def train(name: str) -> Path | None:
        train_dir = out / "train" / name
        dataset = (
            ["--dataset.repo_id=local/bench", f"--dataset.root={data}"]
            if name.startswith("aim")
            else ["--dataset.repo_id=local/bench_images", f"--dataset.root={images_only}"]
        )
        fresh = [
            *flags[name],
            *dataset,
            f"--steps={steps}",
            f"--batch_size={args.batch_size}",
            f"--save_freq={steps // 4}",
            f"--log_freq={LOG_FREQ}",
            "--num_workers=2",
            f"--policy.device={args.device}",
            "--policy.push_to_hub=false",
            "--wandb.enable=false",
            f"--seed={args.seed}",
        ]
        cmd = train_command(train_dir, fresh)
        if cmd and args.partial:
            return None
        if cmd:
            start_training(train_dir, cmd)
        if cmd:
            bench.run(f"train_{name}", cmd)
        return checkpoint(name)

    def evaluate(name: str, policy: Path, task: str, n: int, stage: str) -> dict | None:
        folder = out / "eval" / stage
        if not (folder / "eval_info.json").is_file():
            if args.partial:
                return None
            shutil.rmtree(folder, ignore_errors=True)
            bench.run(
                f"eval_{stage}",
                [
                    str(BIN / "lerobot-eval"),
                    f"--policy.path={policy}",
                    *env_flags(task),
                    f"--eval.n_episodes={n}",
                    f"--eval.batch_size={min(args.eval_batch_size, n)}",
                    "--eval.use_async_envs=false",
                    f"--policy.device={args.device}",
                    f"--output_dir={folder}",
                    f"--seed={eval_seed}",
                ],
            )
        eval_info = json.loads((folder / "eval_info.json").read_text())
        task_groups = resolve_tasks(task)
        counts = counts_by_task(eval_info, task_groups)
        per_task = {t: 100.0 * k / n for t, (k, n) in counts.items()}
        successes = sum(k for k, _ in counts.values())
        episodes = sum(n for _, n in counts.values())
        log = out / "logs" / f"train_{name}.log"
        return {
            "method": name,
            "success": 100.0 * successes / episodes,
            "successes": successes,
            "eval_episodes": episodes,
            "interval": wilson_interval(100.0 * successes / episodes, episodes),
            "per_group": by_difficulty(per_task),
            "per_task": per_task,
            "per_task_counts": {t: list(c) for t, c in counts.items()},
            "per_task_interval": {t: wilson_interval(100.0 * k / n, n) for t, (k, n) in counts.items()},
            "train_s": bench.times.get(f"train_{name}"),
            "eval_s": bench.times.get(f"eval_{stage}"),
            "learning_curve": learning_curve(log.read_text(), LOG_FREQ, args.batch_size)
            if log.is_file()
            else [],
        }

    for name in methods:
        policy = train(name)
        if policy is not None and (row := evaluate(name, policy, args.tasks, args.eval_episodes, name)):
            rows[name] = row

    grpo = None
    chosen = best_of(rows, STATE_PAIR, methods)
    if args.grpo_iterations > 0 and chosen is not None:
        choice_file = out / "grpo_from.txt"  # keep the choice across reruns
        if not choice_file.is_file() and not args.partial:
            choice_file.write_text(chosen)
        source = choice_file.read_text().strip() if choice_file.is_file() else chosen
        grpo_dir = out / "train" / GRPO
        last = grpo_dir / "checkpoints" / "last"
        done = last.exists() and int(last.resolve().name) >= args.grpo_iterations
        before = evaluate(
            source, checkpoint(source), GRPO_TASK, args.grpo_eval_episodes, f"{source}_{GRPO_TASK}"
        )
        if not done and not args.partial:
            bench.run(
                f"train_{GRPO}",
                [
                    str(BIN / "lerobot-aim-grpo"),
                    f"--policy.path={checkpoint(source)}",
                    *env_flags(GRPO_TASK),
                    f"--output_dir={grpo_dir}",
                    f"--iterations={args.grpo_iterations}",
                    f"--num_initial_states={args.grpo_initial_states}",
                    *GRPO_RECIPE,
                    "--save_every=1",
                    f"--seed={args.seed}",
                    f"--resume={str(last.exists()).lower()}",
                ],
            )
            done = True
        after = (
            evaluate(
                GRPO, last / "pretrained_model", GRPO_TASK, args.grpo_eval_episodes, f"{GRPO}_{GRPO_TASK}"
            )
            if done
            else None
        )
        if before is not None:
            metrics = grpo_dir / "metrics.jsonl"
            grpo = {
                "from": source,
                "task": GRPO_TASK,
                "iterations": args.grpo_iterations,
                "rollouts_per_iteration": 8 * args.grpo_initial_states,
                "recipe": GRPO_RECIPE,
                "before": before,
                "after": after,
                "train_s": bench.times.get(f"train_{GRPO}"),
                "metrics": [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
                if metrics.is_file()
                else [],
            }

    tag = "cpu" if args.tasks == CPU_SUITE else args.tasks.replace(",", "+")
    name = f"success_{tag}_{args.image_size}px_{device_tag(args.device)}"
    result = {
        "args": {k: str(v) for k, v in asdict(args).items()},
        "tasks": groups,
        "train_steps": steps,
        "samples_per_method": steps * args.batch_size,
        "eval_seeds": [eval_seed, eval_seed + args.eval_episodes - 1],
        "demo_seeds_from": args.seed,
        "value_map_schema": map_schema,
        "git": git_commit(),
        "machine_label": f"{os.cpu_count()}-core CPU" if args.device == "cpu" else args.device,
        "complete": all(m in rows for m in methods)
        and (args.grpo_iterations == 0 or (grpo or {}).get("after") is not None),
        "method_flags": {m: flags[m] for m in methods},
        "aim_recipe": AIM_RECIPE,
        "better_state_variant": chosen,
        "times_s": bench.times,
        "rows": list(rows.values()),
        "grpo": grpo,
    }
    if not rows:
        raise SystemExit("No method has finished yet: nothing to write.")
    path = write(name, result, table(result, args))
    plot(list(rows.values()), RESULTS / f"{name}.png")
    print(path.read_text())
    print(f"written to {path}")


def _interval(row: dict) -> str:
    low, high = row["interval"]
    return f"{low:.0f}-{high:.0f}"


def comparisons(rows: dict[str, dict]) -> list[str]:
    """The issue's targets, each with both sides' success and 95% intervals."""
    lines = []

    def side(name: str, task: str | None = None) -> str:
        r = rows[name]
        if task is None:
            return f"{name} {r['success']:.1f}% [{_interval(r)}]"
        k, n = r["per_task_counts"][task]
        low, high = r["per_task_interval"][task]
        return f"{name} {100 * k / n:.0f}% ({k}/{n}) [{low:.0f}-{high:.0f}]"

    ic = "aim_intent_causal"
    baselines = [b for b in BASELINES if b in rows]
    if ic in rows and baselines:
        best = max(baselines, key=lambda b: rows[b]["success"])
        lines.append(f"- intent_causal >= best baseline overall: {side(ic)} vs {side(best)}")
        if "act" in rows and GRPO_TASK in rows[ic]["per_task"]:
            lines.append(
                f"- intent_causal > ACT on {GRPO_TASK}: {side(ic, GRPO_TASK)} vs {side('act', GRPO_TASK)}"
            )
    for other in ("aim_wam", "aim_no_value"):
        if ic in rows and other in rows:
            lines.append(f"- intent_causal >= {other}: {side(ic)} vs {side(other)}")
    if all(m in rows for m in STATE_PAIR):
        lines.append(
            f"- state: {side(STATE_PAIR[0])} vs {side(STATE_PAIR[1])}; better: {best_of(rows, STATE_PAIR)}"
        )
    return lines


def table(result: dict, args) -> str:
    rows = result["rows"]
    tasks = list(rows[0]["per_task"])
    group_names = list(rows[0]["per_group"])
    head = [
        "method",
        "success (%)",
        "95% interval",
        *(f"{g} (%)" for g in group_names),
        *tasks,
        "train (s)",
        "eval (s)",
    ]
    lines = [
        f"Value-map schema of the dataset: {result['value_map_schema']}; commit {result['git']['commit'][:10]}"
        f"{' (uncommitted changes)' if result['git']['dirty'] else ''}; {result['machine_label']}."
        + ("" if result["complete"] else " **Partial: stages still running or not run.**"),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    fmt = lambda v: "" if v is None else f"{v:.0f}"  # noqa: E731
    for r in rows:
        cells = [
            r["method"],
            f"{r['success']:.1f}",
            _interval(r),
            *(f"{r['per_group'][g]:.1f}" for g in group_names),
            *(
                f"{r['per_task'][t]:.0f} ({r['per_task_interval'][t][0]:.0f}-{r['per_task_interval'][t][1]:.0f})"
                for t in tasks
            ),
            fmt(r["train_s"]),
            fmt(r["eval_s"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for method, groups in LITERATURE.items():
        cells = [
            f"{method} (literature, MT50 average {groups['MT50']})",
            "",
            "",
            *(f"{groups[g]:.1f}" for g in group_names),
            *([""] * len(tasks)),
            "",
            "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    grpo = result["grpo"]
    if grpo:
        lines += [
            "",
            f"Stage II on {grpo['task']} from {grpo['from']} ({grpo['iterations']} GRPO iterations x "
            f"{grpo['rollouts_per_iteration']} rollouts; {' '.join(grpo['recipe'])}; "
            f"train {fmt(grpo['train_s'])} s):",
            "",
            "| checkpoint | success (%) | successes | 95% interval | eval (s) |",
            "|---|---|---|---|---|",
        ]
        for label, r in (("Stage I", grpo["before"]), ("Stage I + GRPO", grpo["after"])):
            if r is not None:
                lines.append(
                    f"| {label} | {r['success']:.1f} | {r['successes']}/{r['eval_episodes']} | "
                    f"{_interval(r)} | {fmt(r['eval_s'])} |"
                )
    lines += ["", "Targets (issue 17):", *comparisons({r["method"]: r for r in rows})]
    lines.append(
        f"\nTasks `{args.tasks}`; {args.episodes} scripted demonstrations per task (seeds from {args.seed}); "
        f"{result['samples_per_method']} training samples per method ({result['train_steps']} steps x batch "
        f"{args.batch_size}); {args.eval_episodes} evaluation episodes per task of at most {args.episode_length} "
        f"steps, lerobot-eval seeds {result['eval_seeds'][0]}-{result['eval_seeds'][1]} for every method; every view "
        f"rendered and stored at {args.image_size}x{args.image_size} for every method (AIM: "
        f"`--policy.image_size=[{args.image_size},{args.image_size}]`, wrist views packed at half size on its "
        "T-pose canvas). AIM recipe on the tiny preset: "
        + " ".join(result["aim_recipe"])
        + ". Per-method flags: "
        "`benchmarks/success.py` method_flags. 95% intervals: Wilson score. Train and eval times are wall "
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
    fig, (ax, curves) = plt.subplots(1, 2, figsize=(1.6 * len(columns) + 8, 3.6), width_ratios=[2.2, 1])
    for i, r in enumerate(rows):
        values = [r["success"], *r["per_task"].values()]
        low = [r["interval"][0], *(r["per_task_interval"][t][0] for t in r["per_task"])]
        high = [r["interval"][1], *(r["per_task_interval"][t][1] for t in r["per_task"])]
        err = np.array([np.subtract(values, low), np.subtract(high, values)])
        ax.bar(
            np.arange(len(columns)) + i * width,
            values,
            width,
            yerr=err,
            capsize=1.5,
            label=r["method"],
            error_kw={"elinewidth": 0.6},
        )
        if r["learning_curve"]:
            curve = r["learning_curve"]
            curves.plot([p["samples"] for p in curve], [p["loss"] for p in curve], label=r["method"], lw=1)
    ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns, fontsize=7)
    ax.set(ylabel="success (%), 95% Wilson interval", ylim=(0, 100))
    ax.legend(fontsize=6, loc="upper right")
    curves.set(xlabel="training samples", ylabel="training loss (each method's own)", yscale="log")
    curves.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    run_command(success, "benchmarks.success")


if __name__ == "__main__":
    main()
