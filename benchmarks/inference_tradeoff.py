"""What fewer video denoising steps cost in action quality: offline action error per schedule.

    python -m benchmarks.inference_tradeoff --policy_path=<checkpoint> --dataset.repo_id=<held-out> \\
        --dataset.root=<dir> --schedules.video_steps="[1,2,4,10]"

For each schedule (video steps of x and m, action steps of a; :class:`ChunkSchedule`), samples the
chunk of held-out frames of a recorded dataset (seeds not used for training) from the same initial
noise, and compares it with the actions the expert took: mean squared error in the policy's
normalised action space (over the chunk, frames whose chunk runs past the episode's end masked as in
training) and the error of the first ``n_action_steps`` actions, the ones a robot executes. The FLOPs
of each schedule (``chunk_flops``) and its CPU latency, measured in the same run, go beside it.
Writes ``results/inference_tradeoff_<name>.{json,md}``.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from lerobot.configs import parser
from tqdm import tqdm

from benchmarks.chunk_flops import chunk_flops
from benchmarks.chunk_latency import ScheduleGrid, inputs, time_call
from benchmarks.common import device_tag, mean_interval, write
from benchmarks.param_count import latent_channels
from lerobot_aim.model import Prediction, sample_chunk


@dataclass
class DatasetSource:
    # Dataset id of the held-out episodes (a local one needs --dataset.root).
    repo_id: str = ""
    # Local folder of the dataset.
    root: str | None = None


@dataclass
class InferenceTradeoffConfig:
    # The trained AIM checkpoint (a `pretrained_model` folder with its processors).
    policy_path: str = ""
    dataset: DatasetSource = field(default_factory=DatasetSource)
    # Frames evaluated, spread evenly over the dataset.
    samples: int = 192
    # Frames per batch.
    batch_size: int = 16
    # Seed of the initial noise (the same for every schedule).
    seed: int = 0
    # The schedules compared.
    schedules: ScheduleGrid = field(default_factory=lambda: ScheduleGrid(video_steps=[1, 2, 4, 10]))
    # Name of the result files (default: the checkpoint's run folder).
    name: str | None = None


def offline_errors(policy, preprocessor, dataset, schedules, cfg) -> list[dict]:
    """Per schedule: chunk and executed-prefix MSE (normalised actions) over the evaluated frames, with
    95% intervals, and the paired difference to the joint schedule (same frames, same noise)."""
    indices = torch.linspace(0, len(dataset) - 1, cfg.samples).round().long().unique().tolist()
    per_frame = {s: {"chunk": [], "executed": []} for s in schedules}
    executed = policy.config.n_action_steps
    generator = torch.Generator().manual_seed(cfg.seed)
    for start in tqdm(range(0, len(indices), cfg.batch_size), desc="held-out frames"):
        items = [dataset[i] for i in indices[start : start + cfg.batch_size]]
        batch = {
            key: torch.stack([item[key] for item in items])
            for key in items[0]
            if torch.is_tensor(items[0][key])
        }
        batch["task"] = [item["task"] for item in items]
        with torch.no_grad():
            sample = policy.encode_sample(preprocessor(batch))
        future, dtype = sample.future, sample.context.obs_latents.dtype
        noise = Prediction(
            torch.randn(future.rgb.shape, generator=generator).to(dtype),
            torch.randn(future.rgb.shape, generator=generator).to(dtype)
            if future.value is not None
            else None,
            torch.randn(future.actions.shape, generator=generator).to(dtype),
        )
        mask = sample.action_mask.float()
        for schedule in schedules:
            pred, _ = sample_chunk(policy.model, sample.context, noise, schedule)
            error = (pred.actions.float() - future.actions.float()).square().mean(-1) * mask  # (B, chunk)
            per_frame[schedule]["chunk"].append(error.sum(1) / mask.sum(1).clamp(min=1))
            per_frame[schedule]["executed"].append(
                error[:, :executed].sum(1) / mask[:, :executed].sum(1).clamp(min=1)
            )
    per_frame = {s: {k: torch.cat(v) for k, v in errors.items()} for s, errors in per_frame.items()}
    reference = next((s for s in schedules if s.video_steps == s.action_steps), schedules[-1])
    rows = []
    for s, errors in per_frame.items():
        row = {"video_steps": s.video_steps, "action_steps": s.action_steps, "frames": len(indices)}
        for kind, values in errors.items():
            row[f"{kind}_mse"], row[f"{kind}_mse_interval"] = mean_interval(values)
            row[f"{kind}_diff"], row[f"{kind}_diff_interval"] = mean_interval(
                values - per_frame[reference][kind]
            )
        rows.append(row)
    return rows


@parser.wrap()
def main(cfg: InferenceTradeoffConfig) -> None:
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_aim.model import AIMTransformer
    from lerobot_aim.modeling_aim import AIMPolicy

    policy = AIMPolicy.from_pretrained(cfg.policy_path).eval()
    preprocessor, _ = make_pre_post_processors(policy.config, pretrained_path=cfg.policy_path)
    meta = LeRobotDatasetMetadata(cfg.dataset.repo_id, root=cfg.dataset.root)
    dataset = LeRobotDataset(
        cfg.dataset.repo_id,
        root=cfg.dataset.root,
        delta_timestamps=resolve_delta_timestamps(policy.config, meta),
    )
    schedules = cfg.schedules.of(policy.config)
    rows = offline_errors(policy, preprocessor, dataset, schedules, cfg)

    config, action_dim = policy.config, policy.config.action_dim
    with torch.device("meta"):
        counted = AIMTransformer(
            config, action_dim, latent_channels(config), state_dim=config.state_dim
        ).eval()
    views = len(config.cameras)
    meta_context, meta_noise = inputs(config, action_dim, 1, views, torch.device("meta"), torch.float32)
    cpu_context, cpu_noise = inputs(config, action_dim, 1, views, torch.device("cpu"), torch.float32)
    if config.use_state:
        meta_context.state = torch.zeros(1, config.state_dim, device="meta")
        cpu_context.state = torch.zeros(1, config.state_dim)
    for row, schedule in zip(rows, schedules, strict=True):
        row["cached_gflop"] = chunk_flops(counted, meta_context, meta_noise, schedule, True) / 1e9
        row["cpu_ms"] = 1000 * time_call(
            lambda s=schedule: sample_chunk(policy.model, cpu_context, cpu_noise, s), 5, torch.device("cpu")
        )
    reference = next((r for r in rows if r["video_steps"] == r["action_steps"]), rows[-1])
    for row in rows:
        row["flop_share"] = row["cached_gflop"] / reference["cached_gflop"]
        row["time_share"] = row["cpu_ms"] / reference["cpu_ms"]

    def interval(r, key):
        low, high = r[f"{key}_interval"]
        return f"{r[key]:.4f} [{low:.4f}, {high:.4f}]"

    table = (
        "| video steps | action steps | chunk MSE [95%] | executed MSE [95%] | executed MSE minus the joint "
        f"schedule's [95%] | GFLOP | share of the joint schedule (FLOPs) | CPU ms ({device_tag('cpu')}) | "
        "share (time) |\n|---|---|---|---|---|---|---|---|---|\n"
    ) + "\n".join(
        f"| {r['video_steps']} | {r['action_steps']} | {interval(r, 'chunk_mse')} | "
        f"{interval(r, 'executed_mse')} | {r['executed_diff']:+.4f} [{r['executed_diff_interval'][0]:+.4f}, "
        f"{r['executed_diff_interval'][1]:+.4f}] | {r['cached_gflop']:.3g} | {r['flop_share']:.3f} | "
        f"{r['cpu_ms']:.1f} | {r['time_share']:.3f} |"
        for r in rows
    )
    table += (
        f"\n\nOffline action error (intervals: 1.96 standard errors over frames; the difference is paired) of `{cfg.policy_path}` on {rows[0]['frames']} frames of `{cfg.dataset.repo_id}` "
        f"(normalised actions; the same initial noise for every schedule, seed {cfg.seed}); executed = the first "
        f"{config.n_action_steps} actions of the chunk. FLOPs: the policy's own shapes on the meta device."
    )
    name = cfg.name or Path(cfg.policy_path).resolve().parents[2].name
    result = {"policy": cfg.policy_path, "dataset": cfg.dataset.repo_id, "rows": rows}
    path = write(f"inference_tradeoff_{name}", result, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
