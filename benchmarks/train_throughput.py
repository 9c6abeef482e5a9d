"""Stage I training throughput and peak memory of the AIM network (forward, backward, AdamW step).

    python -m benchmarks.train_throughput --preset=aim_tiny --batch=16                      # CPU
    python -m benchmarks.train_throughput --preset=aim_wan22_5b --device=cuda --batch=1     # GPU, bf16

Random latents of the preset's shapes (three views); the frozen codec and text encoder are not
included (their cost is one encode per sample). On a GPU it also reports the fraction of the bf16
peak reached, counting 6 x parameters x tokens FLOPs per sample (attention excluded: a lower bound).
Writes ``results/train_throughput_<preset>_<device>.{json,md}``.
"""

import resource
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.configs import parser
from tqdm import tqdm

from benchmarks.chunk_latency import DTYPES, inputs
from benchmarks.common import check_at_least_one, check_device, check_preset, device_tag, write
from benchmarks.param_count import latent_channels
from lerobot_aim import load_preset
from lerobot_aim.cli import run_command
from lerobot_aim.model import AIMTransformer

BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM


@dataclass
class TrainThroughputConfig:
    # Preset whose network is trained (random weights, a config under configs/).
    preset: str = "aim_tiny"
    # "cpu" or "cuda".
    device: str = "cpu"
    # Samples per training step.
    batch: int = 16
    # Camera views packed in the canvas.
    views: int = 3
    # Timed training steps (after one warm-up step).
    steps: int = 10
    # Action dimension.
    action_dim: int = 14

    def __post_init__(self) -> None:
        check_preset(self.preset)
        check_device(self.device)
        check_at_least_one(batch=self.batch, views=self.views, steps=self.steps, action_dim=self.action_dim)


@parser.wrap()
def train_throughput(cfg: TrainThroughputConfig) -> dict:
    config = load_preset(cfg.preset, device=cfg.device)
    device, dtype = torch.device(cfg.device), DTYPES[config.dtype]
    with device:
        model = AIMTransformer(config, cfg.action_dim, latent_channels(config)).set_dtype(dtype).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    context, noise = inputs(config, cfg.action_dim, cfg.batch, cfg.views, device, dtype)
    obs, past = context.obs_latents, context.past_actions
    sigma = torch.full((cfg.batch,), 0.5, device=device)

    def step():
        pred = model(context, noise, sigma, sigma)
        loss = F.mse_loss(pred.rgb.float(), noise.rgb.float()) + F.mse_loss(
            pred.value.float(), noise.value.float()
        )
        loss = loss + F.mse_loss(pred.actions.float(), noise.actions.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in tqdm(range(cfg.steps), desc="train steps"):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / cfg.steps
    params = sum(p.numel() for p in model.parameters())
    tokens = sum(t.numel() // t.shape[-1] for t in (noise.actions,)) // cfg.batch
    grid_tokens = obs.shape[-2] * obs.shape[-1] // (config.patch_size[1] * config.patch_size[2])
    tokens += grid_tokens * (obs.shape[2] + 2 * config.future_frames) + past.shape[1]
    result = {
        "preset": cfg.preset,
        "batch": cfg.batch,
        "views": cfg.views,
        "tokens_per_sample": tokens,
        "parameters": params,
        "step_s": seconds,
        "samples_per_s": cfg.batch / seconds,
        "gradient_checkpointing": config.gradient_checkpointing,
        "dtype": config.dtype,
    }
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        tflops = 6 * params * tokens * cfg.batch / seconds / 1e12
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()), None)
        result.update(model_tflops=tflops, bf16_peak_fraction=tflops / peak if peak else None)
    else:
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    table = (
        "| "
        + " | ".join(result)
        + " |\n|"
        + "---|" * len(result)
        + "\n| "
        + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in result.values())
        + " |"
    )
    path = write(f"train_throughput_{cfg.preset}_{device_tag(cfg.device)}", result, table)
    print(table)
    print(f"written to {path}")
    return result


def main() -> None:
    run_command(train_throughput, "benchmarks.train_throughput")


if __name__ == "__main__":
    main()
