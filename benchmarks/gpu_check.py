"""The first run on a GPU, in one command: GPU tests, 5B chunk latency, a training step, bf16 peak.

    python -m benchmarks.gpu_check            # one H100 / H200, under 8 minutes, writes results/
    python -m benchmarks.gpu_check --smoke=true    # the same steps at the tiny preset's size, on a CPU

On the GPU, with random weights:

1. ``pytest -m gpu`` (FlexAttention compiled vs SDPA, the context cache, bf16 chunks on CUDA);
2. the action-chunk latency of the ``aim_wan22_5b`` network (30 layers, bf16, compiled FlexAttention),
   with and without the context cache, at the preset's denoising steps;
3. one Stage I training step (lerobot-train's ``update_policy``, AdamW, the preset's bf16 and
   gradient checkpointing) on latents of the preset's shapes, at ``--train_layers`` depths, and at
   full depth when the measured per-layer memory says it fits: seconds and peak memory, scaled
   linearly to 30 layers where it was not run;
4. the fraction of the device's dense bf16 peak that the chunk and the step reach, from FLOPs counted
   on the meta device (``benchmarks.chunk_flops``; attention and matrix products).

The frozen codec and text encoder are not in these figures (see ``benchmarks.memory``). Writes
``results/gpu_check_<device>.{json,md}`` naming the device; ``--smoke=true`` runs every step on the CPU at
the tiny preset's size so that the first GPU run only measures.
"""

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lerobot.configs import parser
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.chunk_flops import chunk_flops
from benchmarks.chunk_latency import inputs, time_call
from benchmarks.common import RESULTS, BenchmarkInputError, check_at_least_one, device_tag, write
from benchmarks.memory import LatentLoss, build
from lerobot_aim import load_preset
from lerobot_aim.cli import run_command
from lerobot_aim.model import ChunkSchedule, sample_chunk

ROOT = Path(__file__).resolve().parents[1]
# Dense bf16 tensor-core peaks (TFLOP/s), SXM boards, from NVIDIA's data sheets.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}


@dataclass
class GPUCheckConfig:
    # The tiny preset on the CPU instead of aim_wan22_5b on the GPU (checks the script).
    smoke: bool = False
    # Depths the training step is measured at (and scaled from, to the preset's depth).
    train_layers: list[int] = field(default_factory=lambda: [2, 4])
    # Timed calls per measurement (the median is reported, after one warm-up call).
    repeats: int = 3
    # Action dimension.
    action_dim: int = 14
    # Folder the results are written to.
    results: Path = RESULTS

    def __post_init__(self) -> None:
        check_at_least_one(repeats=self.repeats, action_dim=self.action_dim)
        if not self.train_layers or min(self.train_layers) < 1:
            raise BenchmarkInputError(
                f"--train_layers={self.train_layers}: pass depths of at least 1, e.g. --train_layers=[2,4]."
            )


def bf16_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_tests() -> dict:
    """``pytest -m gpu`` in a subprocess; its summary line and exit code."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "gpu",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_gpu.py"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    lines = [line for line in run.stdout.strip().splitlines() if line.strip()]
    return {"returncode": run.returncode, "summary": lines[-1] if lines else run.stderr[-500:]}


def chunk_latency(config, action_dim: int, device, repeats: int) -> dict:
    """Median seconds of one chunk with and without the context cache, and the FLOPs of each."""
    from lerobot_aim.modeling_aim import DTYPES

    model = build(config, action_dim, device=device).eval()
    dtype = DTYPES[config.dtype]
    context, noise = inputs(config, action_dim, 1, 3, device, dtype)
    steps = config.num_inference_steps
    out = {"steps": steps}
    for cached in (True, False):
        name = "cached" if cached else "uncached"

        def run(use_cache=cached):
            return sample_chunk(model, context, noise, ChunkSchedule.of(config), use_cache)

        out[f"{name}_s"] = time_call(run, repeats, device)
    meta = torch.device("meta")
    with meta:
        counted = build(config, action_dim, device=meta).eval()
    meta_context, meta_noise = inputs(config, action_dim, 1, 3, meta, torch.float32)
    for cached in (True, False):
        name = "cached" if cached else "uncached"
        out[f"{name}_flop"] = chunk_flops(counted, meta_context, meta_noise, ChunkSchedule.of(config), cached)
    return out


def train_step(config, action_dim: int, device, repeats: int) -> dict:
    """Seconds and peak memory of one update (lerobot-train's ``update_policy``) at the config's depth."""
    from accelerate import Accelerator
    from lerobot.scripts.lerobot_train import update_policy
    from lerobot.utils.logging_utils import AverageMeter, MetricsTracker

    module = LatentLoss(build(config, action_dim, device=device), action_dim)
    accelerator = Accelerator(
        mixed_precision={"bfloat16": "bf16"}.get(config.dtype, "no"), cpu=device.type == "cpu"
    )
    optimizer = config.get_optimizer_preset().build([p for p in module.parameters() if p.requires_grad])
    module, optimizer = accelerator.prepare(module, optimizer)
    tracker = MetricsTracker(
        1, 1, 1, {k: AverageMeter(k) for k in ("loss", "grad_norm", "lr", "update_s", "dataloading_s")}
    )

    def update():
        update_policy(tracker, module, None, optimizer, config.optimizer_grad_clip_norm, accelerator)

    update()  # warm-up: kernels, masks, optimizer state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_call(update, repeats, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    loss = tracker.loss.val
    return {"layers": config.num_layers, "step_s": seconds, "peak_gib": peak, "loss": loss}


def train_step_flop(config, action_dim: int) -> int:
    """FLOPs of one training forward + backward (recomputation included), counted on the meta device."""
    meta = torch.device("meta")
    module = LatentLoss(build(config, action_dim, device=meta), action_dim)
    with FlopCounterMode(display=False) as counter:
        module()[0].backward()
    return counter.get_total_flops()


@parser.wrap()
def gpu_check(cfg: GPUCheckConfig) -> dict:
    device = torch.device("cpu" if cfg.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkInputError(
            "No CUDA device: run on a GPU, or pass --smoke=true to check the script on a CPU."
        )
    preset = "aim_tiny" if cfg.smoke else "aim_wan22_5b"
    overrides = {"device": device.type, "num_inference_steps": 2} if cfg.smoke else {"device": device.type}
    config = load_preset(preset, **overrides)
    started = time.perf_counter()
    result = {"preset": preset, "device": device_tag(device.type), "smoke": cfg.smoke}

    result["gpu_tests"] = gpu_tests()
    print("gpu tests:", result["gpu_tests"], flush=True)

    latency = chunk_latency(config, cfg.action_dim, device, cfg.repeats)
    peak = bf16_peak_tflops(device)
    for name in ("cached", "uncached"):
        latency[f"{name}_tflops"] = latency[f"{name}_flop"] / latency[f"{name}_s"] / 1e12
        latency[f"{name}_bf16_peak_fraction"] = latency[f"{name}_tflops"] / peak if peak else None
    result["chunk"] = latency
    print("chunk:", latency, flush=True)

    depths = sorted(set(cfg.train_layers))
    steps = []
    for n in depths:
        steps.append(
            train_step(load_preset(preset, **overrides, num_layers=n), cfg.action_dim, device, cfg.repeats)
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    (first, last), full = (steps[0], steps[-1]), config.num_layers
    per_layer = {
        k: (last[k] - first[k]) / (last["layers"] - first["layers"])
        for k in ("step_s", "peak_gib")
        if first[k] is not None and len(steps) > 1
    }
    scaled = {k: first[k] + v * (full - first["layers"]) for k, v in per_layer.items()}
    free = torch.cuda.mem_get_info(device)[0] / 2**30 if device.type == "cuda" else None
    if full not in depths and (device.type == "cpu" or (free and scaled.get("peak_gib", 0) < 0.9 * free)):
        steps.append(train_step(config, cfg.action_dim, device, cfg.repeats))
    flop = train_step_flop(config, cfg.action_dim)
    at_full = next((s for s in steps if s["layers"] == full), None)
    step_s = at_full["step_s"] if at_full else scaled["step_s"]
    result["train"] = {
        "measured": steps,
        "per_layer": per_layer,
        "scaled_to_full_depth": scaled,
        "full_depth_measured": at_full is not None,
        "flop": flop,
        "tflops": flop / step_s / 1e12,
        "bf16_peak_fraction": flop / step_s / 1e12 / peak if peak else None,
    }
    print("train:", result["train"], flush=True)
    result["seconds"] = time.perf_counter() - started

    chunk, train = result["chunk"], result["train"]
    fraction = lambda v: f"{100 * v:.1f}%" if v is not None else "n/a"  # noqa: E731
    step_rows = "".join(
        f"| train step, {s['layers']} layers | {s['step_s']:.3f} s, peak "
        f"{s['peak_gib'] if s['peak_gib'] is None else round(s['peak_gib'], 1)} GiB | |\n"
        for s in steps
    )
    full_peak = f", peak {scaled['peak_gib']:.1f} GiB" if not at_full and "peak_gib" in scaled else ""
    table = (
        f"Device: {result['device']}; preset {preset}; GPU tests: {result['gpu_tests']['summary']}\n\n"
        "| measurement | value | bf16 peak reached |\n|---|---|---|\n"
        f"| chunk, context cache ({chunk['steps']} steps) | {1000 * chunk['cached_s']:.1f} ms | "
        f"{fraction(chunk['cached_bf16_peak_fraction'])} |\n"
        f"| chunk, no cache | {1000 * chunk['uncached_s']:.1f} ms | {fraction(chunk['uncached_bf16_peak_fraction'])} |\n"
        f"{step_rows}"
        f"| train step, {full} layers ({'measured' if at_full else 'scaled'}) | {step_s:.3f} s{full_peak} | "
        f"{fraction(train['bf16_peak_fraction'])} |\n\n"
        f"Whole check: {result['seconds']:.0f} s. Random weights; codec and text encoder not included."
    )
    path = write(
        f"gpu_check_{result['device']}" + ("_smoke" if cfg.smoke else ""), result, table, cfg.results
    )
    print(table)
    print(f"written to {path}")
    return result


def main() -> None:
    run_command(gpu_check, "benchmarks.gpu_check")


if __name__ == "__main__":
    main()
