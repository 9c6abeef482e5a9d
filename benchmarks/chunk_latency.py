"""Action-chunk latency of the AIM network per denoising schedule, with and without the context cache.

    python -m benchmarks.chunk_latency --preset=aim_tiny                      # CPU
    python -m benchmarks.chunk_latency --preset=aim_wan22_5b --device=cuda    # GPU, random bf16 weights

Times :func:`lerobot_aim.model.sample_chunk` on random latents of the preset's shapes (three views)
for each schedule (video steps of x and m, action steps of a; the frozen codec and text encoder are not
included), in one run, so that the ratios between schedules are measured on the same machine state.
Writes ``results/chunk_latency_<preset>_h<history>_<device>.{json,md,png}``.
"""

import statistics
import time
from dataclasses import dataclass, field
from functools import partial

import torch
from lerobot.configs import parser
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


@dataclass
class ScheduleGrid:
    """Denoising schedules to measure: every video step count with every action step count it fits."""

    # Steps of x and m.
    video_steps: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 10])
    # Steps of a.
    action_steps: list[int] = field(default_factory=lambda: [10])

    def of(self, config) -> list[ChunkSchedule]:
        return [
            schedule_of(config, action, video)
            for action in self.action_steps
            for video in self.video_steps
            if video <= action
        ]


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


@dataclass
class ChunkLatencyConfig:
    # Preset whose shapes are timed (random weights).
    preset: str = "aim_tiny"
    # "cpu" or "cuda".
    device: str = "cpu"
    # Camera views packed in the canvas.
    views: int = 3
    # Override the preset's history frames (None: the preset's).
    history_frames: int | None = None
    # Timed calls per setting (the median is reported, after one warm-up call).
    repeats: int = 5
    # Action dimension.
    action_dim: int = 14
    # The schedules timed.
    schedules: ScheduleGrid = field(default_factory=ScheduleGrid)


@parser.wrap()
def main(cfg: ChunkLatencyConfig) -> None:
    overrides = {"device": cfg.device}
    if cfg.history_frames is not None:
        overrides["history_frames"] = cfg.history_frames
    config = load_preset(cfg.preset, **overrides)
    device, dtype = torch.device(cfg.device), DTYPES[config.dtype]
    with device:
        model = AIMTransformer(config, cfg.action_dim, latent_channels(config)).set_dtype(dtype).eval()
    context, noise = inputs(config, cfg.action_dim, 1, cfg.views, device, dtype)
    rows = []
    for schedule in tqdm(cfg.schedules.of(config), desc="schedules"):
        row = {"video_steps": schedule.video_steps, "action_steps": schedule.action_steps}
        for cached in (True, False):
            run = partial(sample_chunk, model, context, noise, schedule, cached)
            row["cached_s" if cached else "uncached_s"] = time_call(run, cfg.repeats, device)
        row["cache_speedup"] = row["uncached_s"] / row["cached_s"]
        rows.append(row)
    reference = next((r for r in rows if (r["video_steps"], r["action_steps"]) == (10, 10)), rows[0])
    for r in rows:
        r["time_share_of_joint_10"] = r["cached_s"] / reference["cached_s"]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    table = (
        "| video steps | action steps | cached (ms) | uncached (ms) | cache speed-up | time share of the joint "
        "10-step chunk (cached) |\n|---|---|---|---|---|---|\n"
    ) + "\n".join(
        f"| {r['video_steps']} | {r['action_steps']} | {1000 * r['cached_s']:.1f} | {1000 * r['uncached_s']:.1f} | "
        f"{r['cache_speedup']:.2f}x | {r['time_share_of_joint_10']:.3f} |"
        for r in rows
    )
    name = f"chunk_latency_{cfg.preset}_h{config.history_frames}_{device_tag(cfg.device)}"
    result = {
        "preset": cfg.preset,
        "views": cfg.views,
        "history_frames": config.history_frames,
        "peak_gib": peak,
        "rows": rows,
    }
    path = write(name, result, table)
    plot(rows, path.with_suffix(".png"), f"{cfg.preset}, {cfg.views} views, {device_tag(cfg.device)}")
    print(table)
    print(f"written to {path}")


def plot(rows: list[dict], path, title: str) -> None:
    """Cached and uncached latency of each schedule, as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['video_steps']}/{r['action_steps']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.0 * len(rows) + 2.5, 3))
    for offset, (key, label) in zip(
        (-0.2, 0.2), (("cached_s", "context cache"), ("uncached_s", "no cache")), strict=True
    ):
        ax.bar(x + offset, [1000 * r[key] for r in rows], 0.4, label=label)
    ax.set_xticks(x, labels)
    ax.set(xlabel="video / action denoising steps", ylabel="action chunk (ms)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
