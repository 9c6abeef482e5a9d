"""FLOPs of one action chunk, with and without the context cache, counted on the meta device.

    python -m benchmarks.chunk_flops --preset aim_wan22_5b --steps 1,5,10,20

Samples a chunk (:func:`lerobot_aim.model.sample_chunk`) on the meta device under PyTorch's ``FlopCounterMode``: no weights,
no memory, no GPU, the preset's real shapes (three views). It gives what a timing cannot on a
machine without the model's GPU: the largest speed-up the context cache can bring (uncached /
cached FLOPs: the context's share of the work) and the lowest latency a GPU can reach (FLOPs / its
dense bf16 peak), which the measured latency (``chunk_latency.py``) is then compared with.
Writes ``results/chunk_flops_<preset>_h<history>.{json,md}``.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from benchmarks.chunk_latency import inputs, schedule_of
from benchmarks.common import write
from benchmarks.param_count import latent_channels
from lerobot_aim import load_preset
from lerobot_aim.model import AIMTransformer, ChunkSchedule, sample_chunk

H100_BF16_DENSE_TFLOPS = 989.0  # H100 / H200 SXM, dense


def chunk_flops(model: AIMTransformer, context, noise, schedule: ChunkSchedule, use_cache: bool) -> int:
    with FlopCounterMode(display=False) as counter:
        sample_chunk(model, context, noise, schedule, use_cache)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="aim_wan22_5b")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--history_frames", type=int, default=None, help="override the preset's history")
    parser.add_argument("--steps", default="1,5,10,20")
    parser.add_argument("--action_dim", type=int, default=14)
    args = parser.parse_args()

    overrides = {"device": "cpu"}
    if args.history_frames is not None:
        overrides["history_frames"] = args.history_frames
    config = load_preset(args.preset, **overrides)
    meta = torch.device("meta")
    with meta:
        model = AIMTransformer(config, args.action_dim, latent_channels(config)).eval()
    context, noise = inputs(config, args.action_dim, 1, args.views, meta, torch.float32)
    rows = []
    for steps in tqdm([int(s) for s in args.steps.split(",")], desc="denoising steps"):
        cached, uncached = (chunk_flops(model, context, noise, schedule_of(config, steps), c) for c in (True, False))
        rows.append({"steps": steps, "cached_gflop": cached / 1e9, "uncached_gflop": uncached / 1e9,
                     "bound_speedup": uncached / cached,
                     "h100_min_ms_cached": cached / (H100_BF16_DENSE_TFLOPS * 1e12) * 1e3})  # fmt: skip
    grid = context.obs_latents.shape[-2] * context.obs_latents.shape[-1] // (config.patch_size[1] * config.patch_size[2])
    tokens = {"per_frame": grid, "context": grid * context[0].shape[2] + context[1].shape[1],
              "future_rgb": grid * config.future_frames, "future_value": grid * config.future_frames * (
                  config.attention_mode != "no_value"), "future_actions": config.chunk_size,
              "text": config.text_max_length}  # fmt: skip
    table = (
        f"Tokens: {tokens}\n\n| steps | cached (GFLOP) | uncached (GFLOP) | cache speed-up bound | "
        "H100 lower bound, cached (ms) |\n|---|---|---|---|---|\n"
    ) + "\n".join(
        f"| {r['steps']} | {r['cached_gflop']:.4g} | {r['uncached_gflop']:.4g} | {r['bound_speedup']:.2f}x | "
        f"{r['h100_min_ms_cached']:.3g} |"
        for r in rows
    )
    table += (
        f"\n\nCounted by torch.utils.flop_counter on the meta device (matrix products and attention; "
        f"element-wise work is not counted). Lower bound: FLOPs / {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s "
        "(dense bf16 peak of an H100 SXM); the frozen codec and text encoder are not included."
    )
    name = f"chunk_flops_{args.preset}_h{config.history_frames}"
    path = write(name, {"preset": args.preset, "views": args.views, "history_frames": config.history_frames,
                        "tokens": tokens, "rows": rows}, table)  # fmt: skip
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
