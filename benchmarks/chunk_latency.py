"""Action-chunk latency of the AIM network against denoising steps, with and without the context cache.

    python benchmarks/chunk_latency.py --preset aim_tiny                      # CPU
    python benchmarks/chunk_latency.py --preset aim_wan22_5b --device cuda    # GPU, random bf16 weights

Measures ``AIMTransformer.sample`` (x, m and a denoised together) on random latents of the preset's
shapes (three views); the frozen codec and text encoder are not included. Writes
``results/chunk_latency_<preset>_h<history>_<device>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from tqdm import tqdm

from benchmarks.common import device_tag, write
from benchmarks.param_count import latent_channels
from lerobot_aim import load_preset
from lerobot_aim.asvm.packing import canvas_size
from lerobot_aim.model import AIMTransformer, ChunkSchedule, Context, Prediction, sample_chunk

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def inputs(config, action_dim: int, batch: int, views: int, device, dtype):
    """Random :class:`Context` (latents, past actions, text) and noise of the preset's shapes."""
    height, width = canvas_size(tuple(config.image_size), views)
    s = config.codec_spatial_stride
    channels = latent_channels(config)
    grid = (height // s, width // s)
    rand = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    context = Context(
        rand(batch, channels, config.history_frames + 1, *grid),
        rand(batch, config.num_past_actions, action_dim),
        rand(batch, config.text_max_length, config.text_dim),
    )
    future = (batch, channels, config.future_frames, *grid)
    noise = Prediction(rand(*future), rand(*future), rand(batch, config.chunk_size, action_dim))
    return context, noise


def schedule_of(config, action_steps: int, video_steps: int | None = None) -> ChunkSchedule:
    """The preset's schedule with ``action_steps`` action steps and ``video_steps`` video steps (None: as
    many as the action steps, the joint sampler)."""
    return ChunkSchedule(
        video_steps or action_steps, action_steps, config.video_infer_shift, config.action_infer_shift
    )


def time_call(fn, repeats: int, device) -> float:
    """Median seconds of ``repeats`` calls, after one warm-up call (kernels, masks, compilation)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="aim_tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--history_frames", type=int, default=None, help="override the preset's history")
    parser.add_argument("--steps", default="1,2,5,10,20")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--action_dim", type=int, default=14)
    args = parser.parse_args()

    overrides = {"device": args.device}
    if args.history_frames is not None:
        overrides["history_frames"] = args.history_frames
    config = load_preset(args.preset, **overrides)
    device, dtype = torch.device(args.device), DTYPES[config.dtype]
    with device:
        model = AIMTransformer(config, args.action_dim, latent_channels(config)).set_dtype(dtype).eval()
    context, noise = inputs(config, args.action_dim, 1, args.views, device, dtype)
    rows = []
    for steps in tqdm([int(s) for s in args.steps.split(",")], desc="denoising steps"):
        row = {"steps": steps}
        for cached in (True, False):
            run = partial(sample_chunk, model, context, noise, schedule_of(config, steps), cached)
            row["cached_s" if cached else "uncached_s"] = time_call(run, args.repeats, device)
        row["speedup"] = row["uncached_s"] / row["cached_s"]
        rows.append(row)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    table = "| steps | cached (ms) | uncached (ms) | speed-up |\n|---|---|---|---|\n" + "\n".join(
        f"| {r['steps']} | {1000 * r['cached_s']:.1f} | {1000 * r['uncached_s']:.1f} | {r['speedup']:.2f}x |"
        for r in rows
    )
    name = f"chunk_latency_{args.preset}_h{config.history_frames}_{device_tag(args.device)}"
    path = write(name, {"preset": args.preset, "views": args.views, "history_frames": config.history_frames,
                        "peak_gib": peak, "rows": rows}, table)  # fmt: skip
    plot(rows, path.with_suffix(".png"), f"{args.preset}, {args.views} views, {device_tag(args.device)}")
    print(table)
    print(f"written to {path}")


def plot(rows: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["steps"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3))
    for key, label in (("cached_s", "context cache"), ("uncached_s", "no cache")):
        ax.plot(steps, [1000 * r[key] for r in rows], marker="o", label=label)
    ax.set(xlabel="denoising steps", ylabel="action chunk (ms)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
