"""What keeping the context across control steps saves: chunk latency and FLOPs at history 4.

    python -m benchmarks.context_reuse                     # aim_tiny, history 4, CPU
    python -m benchmarks.context_reuse --device=cuda

Acts over one synthetic episode (a random latent frame, action and state per env step; three views;
random weights), planning a chunk every ``n_action_steps`` steps from the window
:class:`~lerobot_aim.history.ContextHistory` lays out, in three ways, interleaved chunk by chunk in one
run so that they share the machine's state:

- ``causal``: the paper's context rule, the context encoded every chunk;
- ``per_instant``: the per-instant rule, the context encoded every chunk;
- ``per_instant + store``: the per-instant rule through :class:`~lerobot_aim.model.ContextKVStore`,
  which runs only the frames, actions and state new since the last chunk.

For each schedule (video steps of x and m; the preset's action steps) it reports the median time of
encoding the context and of the whole chunk (context + denoising; the frozen codec and text encoder
are not included), their FLOPs (``torch.utils.flop_counter``), and the share of context instants
reused. Writes ``results/context_reuse_<preset>_h<history>_<device>.{json,md}``.
"""

import statistics
import time
from dataclasses import dataclass, field

import torch
from lerobot.configs import parser
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.chunk_latency import DTYPES, inputs, schedule_of
from benchmarks.common import BenchmarkInputError, check_at_least_one, check_device, device_tag, write
from benchmarks.param_count import latent_channels
from lerobot_aim import load_preset
from lerobot_aim.history import ContextHistory
from lerobot_aim.model import AIMTransformer, Context, ContextKVStore, KVCache, sample_chunk

VARIANTS = ("causal", "per_instant", "per_instant + store")


@dataclass
class ContextReuseConfig:
    # Preset whose shapes are timed (random weights; a pixel-codec preset: per_instant needs one).
    preset: str = "aim_tiny"
    # History frames of the context.
    history_frames: int = 4
    # "cpu" or "cuda".
    device: str = "cpu"
    # Camera views packed in the canvas.
    views: int = 3
    # Action dimension; the state has as many numbers.
    action_dim: int = 14
    # Chunks timed after the first (which fills the store and warms up kernels and masks).
    chunks: int = 12
    # Video steps of x and m per schedule (the preset's action steps).
    video_steps: list[int] = field(default_factory=lambda: [10, 1])

    def __post_init__(self) -> None:
        check_device(self.device)
        check_at_least_one(history_frames=self.history_frames, views=self.views, chunks=self.chunks)


class Episode:
    """A random latent frame, action and state of every env step, and the context of a window."""

    def __init__(self, config, action_dim: int, views: int, steps: int, device, dtype):
        context, _ = inputs(config, action_dim, 1, views, device, dtype)
        self.frames = torch.randn(steps, *context.obs_latents[:, :, 0].shape, device=device, dtype=dtype)
        self.actions = torch.randn(steps, 1, action_dim, device=device, dtype=dtype)
        self.states = torch.randn(steps, 1, action_dim, device=device, dtype=dtype)
        self.text = context.text
        self.history = ContextHistory(config.num_past_actions, config.frame_stride, action_dim)

    def window(self, t: int) -> tuple[Context, list[int], list[int]]:
        frame_steps, action_steps = self.history.window_steps(t)
        obs = torch.stack([self.frames[max(s, 0)] for s in frame_steps], dim=2)
        past = torch.stack([self.actions[s] if s >= 0 else 0 * self.actions[0] for s in action_steps], dim=1)
        return Context(obs, past, self.text, self.states[t]), frame_steps, action_steps


def _sync(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def encode(model, store: ContextKVStore | None, window) -> KVCache:
    """The window's context keys and values: through ``store``, or encoded whole."""
    return model.encode_context(window[0]) if store is None else store.encode(model, *window)


def plan(model, store, window, noise, schedule, device) -> tuple[float, float]:
    """Seconds to encode the context, and to plan the whole chunk (context + denoising)."""
    start = _sync(device)
    kv = encode(model, store, window)
    encoded = _sync(device)
    sample_chunk(model, window[0], noise, schedule, context_kv=kv)
    return encoded - start, _sync(device) - start


def steady_flops(model, reuse: bool, previous, window, noise, schedule) -> tuple[int, int]:
    """FLOPs of encoding ``window``'s context (with ``reuse``: a store holding ``previous``) and of
    the whole chunk."""
    store = ContextKVStore() if reuse else None
    if store is not None:
        store.encode(model, *previous)
    with FlopCounterMode(display=False) as counter:
        kv = encode(model, store, window)
    context_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        sample_chunk(model, window[0], noise, schedule, context_kv=kv)
    return context_flops, context_flops + counter.get_total_flops()


@parser.wrap()
def main(cfg: ContextReuseConfig) -> None:
    base = {"history_frames": cfg.history_frames, "device": cfg.device, "use_state": True}
    if load_preset(cfg.preset, **base).codec != "pixel":
        raise BenchmarkInputError(
            f"--preset={cfg.preset}: the per-instant context needs a pixel-codec preset."
        )
    device = torch.device(cfg.device)
    models = {}
    for variant in VARIANTS:
        config = load_preset(cfg.preset, **base, context_attention=variant.split(" ")[0])
        torch.manual_seed(0)  # the same weights in every variant
        with device:
            model = AIMTransformer(config, cfg.action_dim, latent_channels(config), state_dim=cfg.action_dim)
        models[variant] = model.set_dtype(DTYPES[config.dtype]).eval()
    config = models["causal"].config
    dtype = DTYPES[config.dtype]
    every = config.n_action_steps
    first = config.num_past_actions  # the first window without padding
    steps = first + every * (cfg.chunks + 1) + 1
    episode = Episode(config, cfg.action_dim, cfg.views, steps, device, dtype)
    _, noise = inputs(config, cfg.action_dim, 1, cfg.views, device, dtype)
    rows = []
    for video_steps in cfg.video_steps:
        schedule = schedule_of(config, config.num_inference_steps, video_steps)
        stores = {v: ContextKVStore() if v.endswith("store") else None for v in VARIANTS}
        times = {v: {"context": [], "chunk": []} for v in VARIANTS}
        with torch.no_grad():
            for i, t in enumerate(range(first, first + every * (cfg.chunks + 1), every)):
                window = episode.window(t)
                for variant in VARIANTS:
                    context_s, chunk_s = plan(
                        models[variant], stores[variant], window, noise, schedule, device
                    )
                    if i > 0:  # the first chunk fills the store and warms up kernels and masks
                        times[variant]["context"].append(context_s)
                        times[variant]["chunk"].append(chunk_s)
            previous, window = episode.window(first), episode.window(first + every)
            count = {
                v: steady_flops(models[v], v.endswith("store"), previous, window, noise, schedule)
                for v in VARIANTS
            }
        reference = statistics.median(times["causal"]["chunk"])
        store = stores["per_instant + store"]
        for variant in VARIANTS:
            rows.append(
                {
                    "video_steps": video_steps,
                    "action_steps": schedule.action_steps,
                    "variant": variant,
                    "context_ms": 1000 * statistics.median(times[variant]["context"]),
                    "chunk_ms": 1000 * statistics.median(times[variant]["chunk"]),
                    "context_gflop": count[variant][0] / 1e9,
                    "chunk_gflop": count[variant][1] / 1e9,
                    "speedup_vs_causal": reference / statistics.median(times[variant]["chunk"]),
                    "reused_share": store.reused / (store.reused + store.computed)
                    if variant.endswith("store")
                    else 0.0,
                }
            )
    table = (
        "| video / action steps | context | context (ms) | chunk (ms) | context (GFLOP) | chunk (GFLOP) | "
        "chunk speed-up vs causal | context instants reused |\n|---|---|---|---|---|---|---|---|\n"
    ) + "\n".join(
        f"| {r['video_steps']} / {r['action_steps']} | {r['variant']} | {r['context_ms']:.1f} | {r['chunk_ms']:.1f} | "
        f"{r['context_gflop']:.3g} | {r['chunk_gflop']:.3g} | {r['speedup_vs_causal']:.2f}x | {r['reused_share']:.0%} |"
        for r in rows
    )
    table += (
        f"\n\n{cfg.chunks} chunks after the first, one every {every} env steps, medians; "
        f"{cfg.views} views, batch 1, state on. The chunk's time includes encoding the context "
        "(store: the new instants only); the share reused counts the first chunk too."
    )
    name = f"context_reuse_{cfg.preset}_h{cfg.history_frames}_{device_tag(cfg.device)}"
    result = {"preset": cfg.preset, "history_frames": cfg.history_frames, "views": cfg.views, "rows": rows}
    path = write(name, result, table)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
