"""FLOPs of one action chunk per denoising schedule, with and without the context cache, on the meta device.

    python -m benchmarks.chunk_flops --preset=aim_wan22_5b --video_steps="[1,2,3,4,10]" --action_steps="[10]"

Samples a chunk (:func:`lerobot_aim.model.sample_chunk`) on the meta device under PyTorch's
``FlopCounterMode``: no weights, no memory, no GPU, the preset's real shapes (three views). A schedule
is ``video_steps`` steps of x and m and ``action_steps`` steps of a (after the video is final, only
the action tokens run, reading its cached keys and values). Each row gives the cached and uncached
FLOPs, the share of the joint 10-step schedule's (today's default), and the lowest latency a GPU can
reach (FLOPs / its dense bf16 peak), which the measured latency (``chunk_latency.py``) is compared
with. Writes ``results/chunk_flops_<preset>_h<history>.{json,md}``.
"""

from dataclasses import dataclass, field

import torch
from lerobot.configs import parser
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.chunk_latency import ScheduleGrid, inputs
from benchmarks.common import write
from benchmarks.param_count import latent_channels
from lerobot_aim import load_preset
from lerobot_aim.model import AIMTransformer, ChunkSchedule, sample_chunk

H100_BF16_DENSE_TFLOPS = 989.0  # H100 / H200 SXM, dense


@dataclass
class ChunkFlopsConfig:
    # Preset whose shapes are counted.
    preset: str = "aim_wan22_5b"
    # Camera views packed in the canvas.
    views: int = 3
    # Override the preset's history frames (None: the preset's).
    history_frames: int | None = None
    # Action dimension.
    action_dim: int = 14
    # The schedules counted.
    schedules: ScheduleGrid = field(default_factory=ScheduleGrid)


def chunk_flops(model: AIMTransformer, context, noise, schedule: ChunkSchedule, use_cache: bool) -> int:
    with FlopCounterMode(display=False) as counter:
        sample_chunk(model, context, noise, schedule, use_cache)
    return counter.get_total_flops()


@parser.wrap()
def main(cfg: ChunkFlopsConfig) -> None:
    overrides = {"device": "cpu"}
    if cfg.history_frames is not None:
        overrides["history_frames"] = cfg.history_frames
    config = load_preset(cfg.preset, **overrides)
    meta = torch.device("meta")
    with meta:
        model = AIMTransformer(config, cfg.action_dim, latent_channels(config)).eval()
    context, noise = inputs(config, cfg.action_dim, 1, cfg.views, meta, torch.float32)
    rows = []
    for schedule in cfg.schedules.of(config):
        cached, uncached = (chunk_flops(model, context, noise, schedule, c) for c in (True, False))
        row = {
            "video_steps": schedule.video_steps,
            "action_steps": schedule.action_steps,
            "cached_gflop": cached / 1e9,
            "uncached_gflop": uncached / 1e9,
            "h100_min_ms_cached": cached / (H100_BF16_DENSE_TFLOPS * 1e12) * 1e3,
        }
        rows.append(row)
    reference = next((r for r in rows if (r["video_steps"], r["action_steps"]) == (10, 10)), rows[0])
    default = (config.video_inference_steps, config.num_inference_steps)
    for r in rows:
        r["share_of_joint_10"] = r["cached_gflop"] / reference["cached_gflop"]
    grid = (
        context.obs_latents.shape[-2]
        * context.obs_latents.shape[-1]
        // (config.patch_size[1] * config.patch_size[2])
    )
    tokens = {
        "per_frame": grid,
        "context": grid * context.obs_latents.shape[2] + context.past_actions.shape[1],
        "future_rgb": grid * config.future_frames,
        "future_value": grid * config.future_frames * (config.attention_mode != "no_value"),
        "future_actions": config.chunk_size,
        "text": config.text_max_length,
    }
    table = (
        f"Tokens: {tokens}\n\n| video steps | action steps | cached (GFLOP) | uncached (GFLOP) | share of the "
        "joint 10-step chunk (cached) | H100 lower bound, cached (ms) |\n|---|---|---|---|---|---|\n"
    ) + "\n".join(
        f"| {r['video_steps']}{' (default)' if (r['video_steps'], r['action_steps']) == default else ''} | "
        f"{r['action_steps']} | {r['cached_gflop']:.4g} | {r['uncached_gflop']:.4g} | "
        f"{r['share_of_joint_10']:.3f} | {r['h100_min_ms_cached']:.3g} |"
        for r in rows
    )
    table += (
        f"\n\nCounted by torch.utils.flop_counter on the meta device (matrix products and attention; "
        f"element-wise work is not counted). Lower bound: FLOPs / {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s "
        "(dense bf16 peak of an H100 SXM); the frozen codec and text encoder are not included. "
        f"(default): the preset's schedule ({default[0]} video / {default[1]} action steps)."
    )
    name = f"chunk_flops_{cfg.preset}_h{config.history_frames}"
    result = {
        "preset": cfg.preset,
        "views": cfg.views,
        "history_frames": config.history_frames,
        "tokens": tokens,
        "default_schedule": {"video_steps": default[0], "action_steps": default[1]},
        "rows": rows,
    }
    path = write(name, result, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
