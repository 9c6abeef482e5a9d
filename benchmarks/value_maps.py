"""Value-map quality on held-out episodes: AIM's predicted future value maps against the recorded ones.

    python -m benchmarks.value_maps            # after benchmarks.success: its checkpoints
    python -m benchmarks.value_maps --episodes=2 --modes='[intent_causal,wam,no_value]'

Each mode's run is kept under ``<bench_dir>/value_maps/`` and scored again, not rerun, next time.

For every AIM checkpoint with a value stream (one per attention mode), along held-out episodes
(``lerobot-aim-collect`` with seeds that the training dataset never used), the policy plans as it
does online (context: the recorded frames and the executed actions before the current step) every
``frame_stride`` steps, and its own decoding (``AIMPolicy.decode_value_maps()``: frame i shows dataset
step t + (i + 1) * frame_stride) is compared with the value map recorded for that step, per view of the
T-pose canvas:

- peak distance (pixels of that view on the canvas: head at full size, wrists at half size) between
  the predicted and the recorded maxima, the share within 3 px, and the Pearson correlation of the
  two maps, over the frames whose recorded view shows a region (peak >= 0.5);
- at every interaction event of the episode (grasp / place step e, from the collection log), the
  chunk planned at e - frame_stride (whose first frame shows step e): does the executed end effector
  at step e (``observation.ee_position``), projected with that step's stored calibration
  (``CameraCalibration.from_flat``, used as is), land in the predicted high-value region (value >= 0.5,
  the half maximum of a recorded region)? Head view, and any view that sees it;
- the offline action error of the chunk (normalised units, the n_action_steps executed), for every
  mode including ``no_value``.

References on the same frames: the recorded map itself (checks the projection chain: hits should be
~100%), another held-out episode of the same task at the same step (a per-task prior that knows
nothing of this episode's object), and the recorded map of the planning step (persistence; the
policy does not see it). Writes ``results/value_maps_<suite>_<size>px_<machine>.{json,md,png}``; the PNG
is a contact sheet of predicted against recorded maps.
"""

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lerobot.configs import parser

from benchmarks.common import (
    RESULTS,
    BenchmarkInputError,
    check_at_least_one,
    device_tag,
    mean_interval,
    write,
)
from benchmarks.success import CPU_SUITE, ROOT, dataset_value_map_schema, git_commit
from lerobot_aim.cli import run_command

BIN = Path(sys.executable).parent
HELDOUT_SEED = 5000
REGION = 0.5  # high-value region: predicted value >= the half maximum of a recorded (unit-peak) region
NEAR_PX = 3.0
MODES = {
    "intent_causal": "aim_intent_causal",
    "intent_causal_state": "aim_intent_causal_state",
    "wam": "aim_wam",
    "no_value": "aim_no_value",
}
VIEW_NAMES = ("head", "wrist_left", "wrist_right")


# ── Metrics (pure functions, tested in tests/test_benchmarks.py) ─────────


def peak_uv(value_map: np.ndarray) -> np.ndarray:
    """(u, v) pixel of the maximum of an (H, W) map (the first one on ties)."""
    v, u = np.unravel_index(int(np.argmax(value_map)), value_map.shape)
    return np.array([u, v], dtype=np.float64)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (NaN when either is constant)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-12 else float("nan")


def compare_maps(predicted: np.ndarray, recorded: np.ndarray) -> dict | None:
    """Peak distance (px) and correlation of a predicted (H, W) map against a recorded one; None when
    the recorded view shows no region (its peak is below the half maximum)."""
    if float(recorded.max()) < REGION:
        return None
    distance = float(np.linalg.norm(peak_uv(predicted) - peak_uv(recorded)))
    return {"peak_px": distance, "corr": pearson(predicted, recorded)}


def summarise(entries: list[dict]) -> dict:
    """Mean peak distance, share within NEAR_PX, mean correlation (NaNs left out), count."""
    if not entries:
        return {"n": 0, "peak_px": None, "within_3px": None, "corr": None}
    peaks = np.array([e["peak_px"] for e in entries])
    corrs = np.array([e["corr"] for e in entries])
    corrs = corrs[np.isfinite(corrs)]
    return {
        "n": len(entries),
        "peak_px": float(peaks.mean()),
        "within_3px": float((peaks <= NEAR_PX).mean()),
        "corr": float(corrs.mean()) if len(corrs) else None,
    }


def action_errors(plans: list[dict]) -> dict:
    """Executed-action error per way of giving the actions their value maps (``imagined``, and with a
    value stream ``recorded`` / ``blank``): the mean over episodes of each episode's mean over its
    chunks, with a 95% interval over episodes, and for the given maps the paired difference to the
    imagined ones and the recorded maps' to the blank ones (both clean: the effect of the maps'
    content alone), each paired (same chunks, same noise). ``plans``: per episode, planning step ->
    plan."""
    per_episode = [
        {
            name: float(np.mean([p["action_mse"][name] for p in episode.values()]))
            for name in next(iter(episode.values()))["action_mse"]
        }
        for episode in plans
        if episode
    ]
    out = {}
    for name in per_episode[0]:
        values = torch.tensor([e[name] for e in per_episode], dtype=torch.float64)
        mse, interval = mean_interval(values)
        out[name] = {"mse": mse, "interval": interval, "episodes": len(values)}
        for reference in {"imagined": (), "blank": ("imagined",)}.get(name, ("imagined", "blank")):
            if reference in per_episode[0]:
                others = torch.tensor([e[reference] for e in per_episode], dtype=torch.float64)
                diff, interval = mean_interval(values - others)
                out[name][f"diff_vs_{reference}"] = {"mean": diff, "interval": interval}
    return out


def plan_steps(num_steps: int, stride: int, event_steps: list[int]) -> list[int]:
    """Planning steps of an episode: every ``stride`` steps, and ``e - stride`` for each event e
    (whose chunk's first frame shows step e), in order."""
    steps = set(range(0, num_steps, stride)) | {e - stride for e in event_steps if e - stride >= 0}
    return sorted(steps)


def future_steps(t: int, stride: int, num_frames: int, num_steps: int) -> list[tuple[int, int]]:
    """(frame index, dataset step) shown by the decoded future frames of a chunk planned at t."""
    return [(i, t + (i + 1) * stride) for i in range(num_frames) if t + (i + 1) * stride < num_steps]


def hit(
    canvas_map: np.ndarray, ee_pos: np.ndarray, calibrations: list, head_hw: tuple[int, int], views: str
) -> bool | None:
    """Whether the end effector projects into the high-value region of a (H_c, W_c) canvas map: in the head
    view (``views="head"``) or in any view that sees it (``"max"``); None when no such view sees it."""
    from lerobot_aim.asvm.packing import view_to_canvas
    from lerobot_aim.rl.rewards import bilinear_sample

    best, seen = 0.0, False
    for index, calib in enumerate(calibrations[:1] if views == "head" else calibrations):
        uv, depth = calib.project(np.asarray(ee_pos, np.float64)[None])
        if depth[0] <= 0 or not calib.in_image(uv)[0]:
            continue
        seen = True
        if index == 0:
            scale = np.array([head_hw[1] / calib.width, head_hw[0] / calib.height])
            canvas_uv = view_to_canvas((uv + 0.5) * scale - 0.5, 0, head_hw, len(calibrations))
        else:
            canvas_uv = view_to_canvas(
                uv, index, head_hw, len(calibrations), view_hw=(calib.height, calib.width)
            )
        best = max(best, float(bilinear_sample(torch.as_tensor(canvas_map), torch.as_tensor(canvas_uv))[0]))
    return (best >= REGION) if seen else None


# ── Running a policy along held-out episodes ────────────────────────────


def load_episodes(root: Path, repo_id: str) -> list[dict]:
    """Held-out episodes: per step the observation dict the preprocessor takes, the action, the end
    effector, the calibrations; and the events of the collection log."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_aim.asvm.camera import CameraCalibration
    from lerobot_aim.data import schema
    from lerobot_aim.data.collect import read_collect_log

    dataset = LeRobotDataset(repo_id, root=root)
    cameras = schema.dataset_cameras(dataset.meta.features)
    height, width = dataset.meta.features[schema.image_key(cameras[0])]["shape"][:2]
    log = {e["episode_index"]: e for e in read_collect_log(root)["episodes"]}
    episodes = []
    for ep in range(dataset.meta.total_episodes):
        start = int(dataset.meta.episodes["dataset_from_index"][ep])
        stop = int(dataset.meta.episodes["dataset_to_index"][ep])
        steps = []
        for index in range(start, stop):
            item = dataset[index]
            obs = {
                k: item[k][None]
                for k in [
                    *map(schema.image_key, cameras),
                    *map(schema.value_map_key, cameras),
                    "observation.state",
                ]
            }
            obs["task"] = [item["task"]]
            calibs = [
                CameraCalibration.from_flat(
                    item[schema.intrinsics_key(c)].numpy(),
                    item[schema.extrinsics_key(c)].numpy(),
                    width,
                    height,
                )
                for c in cameras
            ]
            steps.append(
                {
                    "obs": obs,
                    "action": item["action"][None],
                    "ee": item[schema.EE_POSITION].numpy(),
                    "calibrations": calibs,
                }
            )
        entry = log[ep]
        episodes.append(
            {
                "index": ep,
                "task": entry["task"],
                "seed": entry["seed"],
                "steps": steps,
                "events": [(e["kind"], int(e["step"])) for e in entry["events"]],
            }
        )
    return episodes


def canvas_map(canvas: torch.Tensor) -> np.ndarray:
    """(3, H, W) canvas in [0, 1] -> (H, W) grey map."""
    return canvas.float().mean(0).cpu().numpy()


def given_value_latents(policy, frames: torch.Tensor, value_canvases: torch.Tensor) -> torch.Tensor:
    """Standardised value latents (1, C, h, H, W) of given future value-map canvases (1, s h, 3, H, W) in
    [-1, 1], encoded after the context frames (1, 1 + s k, 3, H, W) as training encodes them."""
    return policy.value_latent_norm.normalize(policy._encode_value_maps(frames, value_canvases)).to(
        policy._model_dtype()
    )


def executed_error(actions: torch.Tensor, target: torch.Tensor) -> float:
    """MSE of a chunk's (1, chunk, A) actions against the (n, A) recorded ones it is executed for
    (n <= n_action_steps: fewer at the episode's end), normalised units."""
    actions = actions[0].float()
    return float((actions[: len(target)] - target.to(actions)).square().mean())


def run_policy(path: Path, episodes: list[dict], seed: int, video_steps: int | None = None) -> dict:
    """Along every episode: per planning step the predicted maps (None without a value stream), the
    recorded canvases, the RGB canvases and the executed-action error of the chunk, sampled as online
    (``imagined``) and, with a value stream, with the actions denoised on given value maps instead of
    the imagined ones (same context, same action noise): the recorded future maps (``recorded``, an
    oracle) and blank maps (``blank``, no intent). ``video_steps``: the video's step count, if not the
    checkpoint's (``--policy.num_video_inference_steps``)."""
    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_aim.model.mot import Prediction
    from lerobot_aim.model.sampling import ChunkSchedule, sample_actions_given_video, sample_chunk
    from lerobot_aim.modeling_aim import AIMPolicy
    from lerobot_aim.processor_aim import OBS_RGB_CANVAS, OBS_VALUE_CANVAS

    policy = AIMPolicy.from_pretrained(path).eval()
    preprocessor, _ = make_pre_post_processors(policy.config, pretrained_path=str(path))
    cfg = policy.config
    if video_steps is not None:
        cfg.num_video_inference_steps = video_steps
    schedule = ChunkSchedule.of(cfg)
    torch.manual_seed(seed)
    out = {
        "config": {
            "attention_mode": cfg.attention_mode,
            "use_state": cfg.use_state,
            "image_size": list(cfg.image_size),
            "frame_stride": cfg.frame_stride,
            "video_steps": schedule.video_steps,
            "action_steps": schedule.action_steps,
        },
        "episodes": [],
    }
    for episode in episodes:
        steps = episode["steps"]
        batches = [preprocessor({**s["obs"], "action": s["action"]}) for s in steps]
        rgb = [((b[OBS_RGB_CANVAS][0] + 1) / 2).clamp(0, 1).float().cpu().numpy() for b in batches]
        recorded = [canvas_map((b[OBS_VALUE_CANVAS][0] + 1) / 2) for b in batches]
        events = [e for _, e in episode["events"] if e < len(steps)]
        plans = {}
        planned = set(plan_steps(len(steps), cfg.frame_stride, events))
        policy.reset()
        with torch.no_grad():
            for t, batch in enumerate(batches):
                policy.history.step = t
                policy.history.record_frame(batch[OBS_RGB_CANVAS], t)
                if t in planned:
                    target = torch.cat([b["action"][0][None] for b in batches[t : t + cfg.n_action_steps]])
                    context, noise = policy.chunk_inputs(batch)
                    with policy.compute_precision():
                        pred, _ = sample_chunk(policy.model, context, noise, schedule)
                    policy.remember(pred, context)
                    errors = {"imagined": executed_error(pred.actions, target)}
                    maps = None
                    if policy.model.value is not None:
                        maps = [canvas_map(m) for m in policy.decode_value_maps()[0]]
                        frames, _ = policy.history.context()
                        future = [
                            batches[min(t + (i + 1) * cfg.frame_stride, len(batches) - 1)][OBS_VALUE_CANVAS]
                            for i in range(cfg.future_frames * policy._frozen.codec.temporal_stride)
                        ]
                        future = torch.stack(future, dim=1).to(frames)
                        given = {"recorded": future, "blank": torch.full_like(future, -1.0)}
                        for name, canvases in given.items():
                            video = Prediction(pred.rgb, given_value_latents(policy, frames, canvases), None)
                            with policy.compute_precision():
                                actions = sample_actions_given_video(
                                    policy.model, context, video, noise.actions, schedule
                                )
                            errors[name] = executed_error(actions, target)
                    plans[t] = {"maps": maps, "action_mse": errors}
                policy.history.record_action(batch["action"][0][None].to(policy._device()), t)
        out["episodes"].append({"plans": plans, "recorded": recorded, "rgb": rgb})
    return out


def save_run(path: Path, run: dict) -> None:
    """Keep one mode's run along the held-out episodes (maps, canvases, action errors) in an ``.npz``
    (no pickle), written atomically, so that a rerun scores it without running the policy again."""
    arrays, plans = {}, []
    for k, episode in enumerate(run["episodes"]):
        plans.append({str(t): p["action_mse"] for t, p in episode["plans"].items()})
        for t, p in episode["plans"].items():
            if p["maps"] is not None:
                arrays[f"maps_{k}_{t}"] = np.stack(p["maps"]).astype(np.float32)
        arrays[f"recorded_{k}"] = np.stack(episode["recorded"]).astype(np.float32)
        arrays[f"rgb_{k}"] = np.round(np.stack(episode["rgb"]) * 255).astype(np.uint8)
    arrays["meta"] = np.array(json.dumps({"config": run["config"], "plans": plans}))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, **arrays)
    os.replace(partial, path)


def load_run(path: Path) -> dict:
    """The run :func:`save_run` kept."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        episodes = []
        for k, plans in enumerate(meta["plans"]):
            episodes.append(
                {
                    "plans": {
                        int(t): {
                            "action_mse": mse,
                            "maps": list(data[f"maps_{k}_{t}"]) if f"maps_{k}_{t}" in data else None,
                        }
                        for t, mse in plans.items()
                    },
                    "recorded": list(data[f"recorded_{k}"]),
                    "rgb": list(data[f"rgb_{k}"].astype(np.float32) / 255),
                }
            )
    return {"config": meta["config"], "episodes": episodes}


def split_views(canvas: np.ndarray, num_views: int, head_hw: tuple[int, int]) -> list[np.ndarray]:
    from lerobot_aim.asvm.packing import unpack_tpose

    return [np.asarray(v) for v in unpack_tpose(torch.as_tensor(canvas)[None], num_views, head_hw)]


@dataclass
class HeldOut:
    """What a predictor is scored against: the held-out episodes, their recorded (H_c, W_c) canvas maps
    per step, the frame stride, the decoded future frames per chunk and the canvas layout."""

    episodes: list[dict]
    recorded: list[list[np.ndarray]]
    stride: int
    num_frames: int
    head_hw: tuple[int, int]
    num_views: int


def score(predict, plans: list[dict], held: HeldOut) -> dict:
    """Map and hit metrics of a predictor ``predict(episode_index, t, frame, s) -> (H_c, W_c) map or None``
    at the planning steps ``plans`` (per episode, t -> plan)."""
    episodes, recorded, stride, num_frames = held.episodes, held.recorded, held.stride, held.num_frames
    head_hw, num_views = held.head_hw, held.num_views
    per_view = {v: {i: [] for i in range(num_frames)} for v in VIEW_NAMES[:num_views]}
    hits = {"head": [], "any": []}
    for k, episode in enumerate(episodes):
        steps = len(episode["steps"])
        for t in sorted(t for t in plans[k] if t % stride == 0):  # the online schedule (events add others)
            for i, s in future_steps(t, stride, num_frames, steps):
                predicted = predict(k, t, i, s)
                if predicted is None:
                    continue
                for name, p, r in zip(
                    VIEW_NAMES,
                    split_views(predicted, num_views, head_hw),
                    split_views(recorded[k][s], num_views, head_hw),
                    strict=False,
                ):
                    if (m := compare_maps(p[0], r[0])) is not None:
                        per_view[name][i].append(m)
        for kind, e in episode["events"]:
            t = e - stride
            if t < 0 or e >= steps or t not in plans[k]:
                continue
            predicted = predict(k, t, 0, e)
            if predicted is None:
                continue
            step = episode["steps"][e]
            for views, key in (("head", "head"), ("max", "any")):
                h = hit(predicted, step["ee"], step["calibrations"], head_hw, views)
                if h is not None:
                    hits[key].append({"kind": kind, "hit": h, "task": episode["task"]})
    maps = {
        name: {
            "all": summarise(sum(frames.values(), [])),
            **{f"frame_{i}": summarise(v) for i, v in frames.items()},
        }
        for name, frames in per_view.items()
    }
    hit_rates = {
        key: {
            "n": len(v),
            "rate": (sum(h["hit"] for h in v) / len(v)) if v else None,
            "by_kind": {
                kind: sum(h["hit"] for h in v if h["kind"] == kind)
                / max(1, sum(h["kind"] == kind for h in v))
                for kind in sorted({h["kind"] for h in v})
            },
        }
        for key, v in hits.items()
    }
    return {"maps": maps, "hits": hit_rates}


@dataclass
class ValueMapsConfig:
    # benchmarks.success's output folder: train/<method>/checkpoints and data/ (the training seeds).
    bench_dir: Path = ROOT / "outputs" / "bench_success"
    # MetaWorld tasks of the held-out episodes, comma-separated.
    tasks: str = CPU_SUITE
    # Held-out episodes per task.
    episodes: int = 5
    # First seed of the held-out episodes (must not be a training seed).
    seed: int = HELDOUT_SEED
    # Size the views are rendered at (that of the training dataset).
    image_size: int = 48
    # Attention modes to score (each needs its benchmarks.success checkpoint).
    modes: list[str] = field(default_factory=lambda: list(MODES))
    # Held-out episodes on the contact sheet.
    sheet_episodes: int = 3
    # Denoising steps of x and m (default: the checkpoint's; e.g. 1 to score one-step maps).
    video_steps: int | None = None

    def __post_init__(self) -> None:
        check_at_least_one(
            episodes=self.episodes, image_size=self.image_size, sheet_episodes=self.sheet_episodes
        )
        if unknown := sorted(set(self.modes) - set(MODES)):
            raise BenchmarkInputError(f"--modes: unknown {unknown}; choose from {list(MODES)}.")
        if self.video_steps is not None and self.video_steps < 1:
            raise BenchmarkInputError(f"--video_steps={self.video_steps}: at least 1 (or leave it unset).")


@parser.wrap()
def value_maps(args: ValueMapsConfig) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from lerobot_aim.data.collect import read_collect_log

    bench = Path(args.bench_dir).resolve()
    heldout = bench / "heldout"
    if not (heldout / "meta" / "info.json").is_file():
        subprocess.run(
            [
                str(BIN / "lerobot-aim-collect"),
                "--repo_id=local/heldout",
                f"--root={heldout}",
                f"--task={args.tasks}",
                f"--num_episodes={args.episodes}",
                f"--seed={args.seed}",
                f"--image_size={args.image_size}",
                "--max_steps=300",
            ],
            check=True,
        )
    train_seeds = read_collect_log(bench / "data")["attempted_seeds"]
    held_seeds = read_collect_log(heldout)["attempted_seeds"]
    overlap = {t: sorted(set(s) & set(train_seeds.get(t, []))) for t, s in held_seeds.items()}
    if any(overlap.values()):
        raise SystemExit(f"Held-out seeds were used for training: {overlap}. Pick another --seed.")
    info = json.loads((heldout / "meta" / "info.json").read_text())
    episodes = load_episodes(heldout, "local/heldout")
    runs = {}
    for mode in args.modes:
        path = bench / "train" / MODES[mode] / "checkpoints" / "last" / "pretrained_model"
        step = path.parent.resolve().name  # the checkpoint's step: a new checkpoint is run again
        steps = "" if args.video_steps is None else f"_video{args.video_steps}"
        kept = bench / "value_maps" / f"{mode}_{step}_seed{args.seed}_{len(episodes)}ep{steps}.npz"
        if kept.is_file():
            runs[mode] = load_run(kept)
        elif (path / "model.safetensors").is_file():
            print(f"{mode}: {path}", flush=True)
            runs[mode] = run_policy(path, episodes, args.seed, args.video_steps)
            save_run(kept, runs[mode])
    if not runs:
        raise SystemExit(f"No AIM checkpoint under {bench / 'train'}: run benchmarks.success first.")
    first = next(iter(runs.values()))
    stride = first["config"]["frame_stride"]
    head_hw = tuple(first["config"]["image_size"])
    recorded = first["episodes"]
    recorded_maps = [e["recorded"] for e in recorded]
    num_views = 3
    plans = {mode: [e["plans"] for e in run["episodes"]] for mode, run in runs.items()}
    num_frames = next(
        (len(p["maps"]) for run in plans.values() for ep in run for p in ep.values() if p["maps"]), 2
    )
    any_plans = next(iter(plans.values()))

    held = HeldOut(episodes, recorded_maps, stride, num_frames, head_hw, num_views)
    results = {}
    for mode, mode_plans in plans.items():
        if mode_plans[0] and next(iter(mode_plans[0].values()))["maps"] is None:
            scores = None
        else:
            scores = score(lambda k, t, i, s, p=mode_plans: p[k][t]["maps"][i], mode_plans, held)
        errors = action_errors(mode_plans)
        results[mode] = {
            "config": runs[mode]["config"],
            "action_mse": errors["imagined"]["mse"],
            "action_mse_by_maps": errors,
            **(scores or {}),
        }
    same_task = {}
    for k, ep in enumerate(episodes):
        others = [j for j, o in enumerate(episodes) if o["task"] == ep["task"] and j != k]
        same_task[k] = others[0] if others else None

    def prior(k, t, i, s):
        j = same_task[k]
        return None if j is None else recorded_maps[j][min(s, len(recorded_maps[j]) - 1)]

    references = {
        "recorded (check)": score(lambda k, t, i, s: recorded_maps[k][s], any_plans, held),
        "task prior (other episode, same step)": score(prior, any_plans, held),
        "persistence (map of the planning step)": score(
            lambda k, t, i, s: recorded_maps[k][t], any_plans, held
        ),
    }
    suite = "cpu" if args.tasks == CPU_SUITE else args.tasks.replace(",", "+")
    video = "" if args.video_steps is None else f"_video{args.video_steps}"
    name = f"value_maps_{suite}_{args.image_size}px{video}_{device_tag('cpu')}"
    sheet = RESULTS / f"{name}.png"
    contact_sheet_of(episodes, recorded, plans, stride, num_frames, sheet, args.sheet_episodes)
    result = {
        "heldout": {
            "root": str(heldout),
            "seeds": held_seeds,
            "episodes": len(episodes),
            "events": sum(len(e["events"]) for e in episodes),
        },
        "value_map_schema": dataset_value_map_schema(info),
        "git": git_commit(),
        "machine_label": f"{os.cpu_count()}-core CPU",
        "region_threshold": REGION,
        "near_px": NEAR_PX,
        "modes": results,
        "references": references,
        "contact_sheet": sheet.name,
    }
    path = write(name, result, table(result))
    print(path.read_text())


def _f(value, digits: int = 2, pc: bool = False) -> str:
    if value is None:
        return ""
    return f"{100 * value:.0f}%" if pc else f"{value:.{digits}f}"


def table(result: dict) -> str:
    head = [
        "predictor",
        "view",
        "frames",
        "peak distance (px)",
        "within 3 px",
        "correlation",
        "hit head",
        "hit any view",
        "action MSE",
    ]
    lines = [
        f"Held-out episodes: {result['heldout']['episodes']} (seeds {result['heldout']['seeds']}), "
        f"{result['heldout']['events']} interaction events; value-map schema {result['value_map_schema']}; "
        f"commit {result['git']['commit'][:10]}; {result['machine_label']}. Sampling (video / action steps): "
        + ", ".join(
            f"{mode} {r['config'].get('video_steps', '?')} / {r['config'].get('action_steps', '?')}"
            for mode, r in result["modes"].items()
        )
        + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    entries = [(mode, r) for mode, r in result["modes"].items()] + [
        (k, r) for k, r in result["references"].items()
    ]
    for label, r in entries:
        if "maps" not in r:
            lines.append(f"| {label} | (no value stream) | | | | | | | {_f(r.get('action_mse'), 3)} |")
            continue
        for i, (view, m) in enumerate(r["maps"].items()):
            s = m["all"]
            hits = (
                [
                    _f(r["hits"]["head"]["rate"], pc=True) + f" (n={r['hits']['head']['n']})",
                    _f(r["hits"]["any"]["rate"], pc=True) + f" (n={r['hits']['any']['n']})",
                ]
                if i == 0
                else ["", ""]
            )
            lines.append(
                f"| {label if i == 0 else ''} | {view} | {s['n']} | {_f(s['peak_px'], 1)} | "
                f"{_f(s['within_3px'], pc=True)} | {_f(s['corr'])} | {' | '.join(hits)} | "
                f"{_f(r.get('action_mse'), 3) if i == 0 else ''} |"
            )
    lines.append(
        f"\nPeak distance, share within {result['near_px']:.0f} px and Pearson correlation per view of the T-pose "
        "canvas (head at full size, wrists at half size), over the predicted future frames whose recorded view "
        f"shows a region (peak >= {result['region_threshold']}). Hit: the executed end effector at an interaction "
        "event, projected with that step's stored calibration, lies where the map predicted for that step (by the "
        f"chunk planned {'one frame stride'} earlier) is >= {result['region_threshold']}. Action MSE: the chunk's "
        "executed actions against the recorded ones, normalised units. References: the recorded map itself (a "
        "check of the projection chain), another held-out episode of the same task at the same step (a per-task "
        "prior), the recorded map of the planning step (not available to the policy). Contact sheet: "
        f"`{result['contact_sheet']}`."
    )
    lines += [
        "",
        "Executed-action error (normalised units) by the value maps the action stream reads: its own "
        "imagined ones (as online), the recorded future maps (an oracle) or blank maps (no intent), with the "
        "same context and action noise; 95% intervals over episodes, the difference paired.",
        "",
        "| mode | value maps read | action MSE | difference to imagined | difference to blank |",
        "|---|---|---|---|---|",
    ]

    def paired(d: dict | None) -> str:
        return "" if d is None else f"{d['mean']:+.4f} [{d['interval'][0]:+.4f}, {d['interval'][1]:+.4f}]"

    for mode, r in result["modes"].items():
        for name, e in r.get("action_mse_by_maps", {}).items():
            low, high = e["interval"]
            lines.append(
                f"| {mode} | {name} | {e['mse']:.4f} [{low:.4f}, {high:.4f}] | "
                f"{paired(e.get('diff_vs_imagined'))} | {paired(e.get('diff_vs_blank'))} |"
            )
    return "\n".join(lines)


def contact_sheet_of(
    episodes, recorded_runs, plans, stride, num_frames, path: Path, num_episodes: int
) -> None:
    """Rows per episode: the real future frame with the recorded map, then each mode's predicted map on
    the same frame; columns: chunks planned every 2 frame strides, their last predicted frame."""
    from lerobot_aim.viz.contact_sheet import contact_sheet, stack_sheets

    modes = [m for m, p in plans.items() if p[0] and next(iter(p[0].values()))["maps"] is not None]
    tasks_seen, chosen = set(), []
    for k, ep in enumerate(episodes):  # one episode per task, the pick-and-place tasks first
        if ep["task"] not in tasks_seen and any(kind == "place" for kind, _ in ep["events"]):
            tasks_seen.add(ep["task"])
            chosen.append(k)
    chosen = (chosen + [k for k in range(len(episodes)) if k not in chosen])[:num_episodes]
    sheets = []
    for k in chosen:
        rgb, recorded = recorded_runs[k]["rgb"], recorded_runs[k]["recorded"]
        steps = len(rgb)
        i = num_frames - 1
        ts = [t for t in range(0, steps, 2 * stride) if t + (i + 1) * stride < steps][:10]
        frames = np.stack([rgb[t + (i + 1) * stride].transpose(1, 2, 0) for t in ts])
        labels = [f"{episodes[k]['task'][:8]} {t}>{t + (i + 1) * stride}" for t in ts]
        sheets.append(
            contact_sheet(
                frames,
                np.stack([recorded[t + (i + 1) * stride] for t in ts]),
                scale=3,
                columns=10,
                labels=[f"REC {lab}" for lab in labels],
            )
        )
        for mode in modes:
            maps = np.stack([plans[mode][k][t]["maps"][i] for t in ts])
            sheets.append(
                contact_sheet(
                    frames, maps, scale=3, columns=10, labels=[f"{mode[:6].upper()} {t}" for t in ts]
                )
            )
    stack_sheets(sheets, path=path, pad=6)


def main() -> None:
    run_command(value_maps, "benchmarks.value_maps")


if __name__ == "__main__":
    main()
