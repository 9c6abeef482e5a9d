"""Training and inference memory of the AIM presets, per GPU count and memory setting.

    python -m benchmarks.memory                       # aim_wan22_5b and its variants, 1-8 GPUs
    python -m benchmarks.memory --measure_width=full  # activations at the preset's own width (slow)

What is measured, and how it is scaled:

- What lerobot-train keeps per parameter: one update through lerobot-train's own ``update_policy``
  with the ``Accelerator`` mixed precision that lerobot-train derives from ``policy.dtype`` and the
  optimizer the policy's preset builds (torch AdamW); the bytes of weights, gradients (at the
  optimizer step) and optimizer state are read from the tensors, per weight dtype, on a narrow model
  of the preset's dtypes. AdamW's moments take the parameter's dtype, so a bf16 preset keeps bf16
  weights, bf16 gradients and bf16 moments (8 bytes per weight) and its fp32 norms 16.
- Parameters per stream and per dtype: the preset's network at full depth on the meta device.
- Activations per sample: peak memory beyond weights, gradients and optimizer state during that
  update (PyTorch's memory profiler, which sorts every allocation into these categories), for
  ``--measure_layers`` depths at batch 1 and the preset's token count; the per-layer slope scales
  it to the preset's depth. ``--measure_width`` picks the width it is measured at (``full``: the
  preset's; an integer: heads of 128, the token counts unchanged, scaled by width).
- Frozen parts: UMT5-XXL's encoder and the Wan2.2 VAE, counted from their configs, in the preset's
  dtype, on every GPU (they are outside the sharded module tree).

Settings: ``lerobot-train`` as it runs today on one GPU or replicated by DDP (plus DDP's gradient
buckets, one more copy of the gradients); FSDP2 through accelerate with mixed precision, which keeps
fp32 master weights, fp32 gradients and fp32 moments of the trained weights (accelerate upcasts them;
16 bytes each), frozen weights in bf16, all of it sharded over the GPUs; CPU offload of those
(FSDP2 ``offload_params``), which leaves the GPU the activations, the frozen encoders and one
unsharded unit at a time. Writes ``results/memory_<preset>.{json,md}``.
"""

from dataclasses import dataclass, field

import torch
from lerobot.configs import parser
from torch import nn

from benchmarks.chunk_latency import inputs
from benchmarks.common import BenchmarkInputError, check_at_least_one, check_preset, write
from benchmarks.param_count import latent_channels
from benchmarks.wan22_local import UMT5_XXL, WAN22_VAE
from lerobot_aim import load_preset
from lerobot_aim.cli import run_command
from lerobot_aim.model import AIMTransformer

GIB = 2**30
GPU_GIB = {"80 GB": 80e9 / GIB, "24 GB": 24e9 / GIB}
# Per trained weight under FSDP2 mixed precision: fp32 master, fp32 gradient, two fp32 moments.
FSDP_MIXED_BYTES = 4 + 4 + 8
VARIANTS = {
    "default": {},
    "share_value_weights": {"share_value_weights": True},
    "freeze_rgb_stream": {"freeze_rgb_stream": True},
    "share_value_weights + freeze_rgb_stream": {"share_value_weights": True, "freeze_rgb_stream": True},
}


@dataclass
class MemoryConfig:
    # Preset whose memory is estimated (a config under configs/).
    preset: str = "aim_wan22_5b"
    # GPU counts of the table.
    gpus: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # Depths the activations are measured at: the first two fit the per-layer slope, the others check it.
    measure_layers: list[int] = field(default_factory=lambda: [1, 2, 4])
    # Width the activations are measured at: "full" (the preset's) or a number of 128-wide heads.
    measure_width: str = "4"
    # Action dimension.
    action_dim: int = 14

    def __post_init__(self) -> None:
        check_preset(self.preset)
        check_at_least_one(action_dim=self.action_dim)
        if not self.gpus or min(self.gpus) < 1:
            raise BenchmarkInputError(
                f"--gpus={self.gpus}: pass GPU counts of at least 1, e.g. --gpus=[1,2,4,8]."
            )
        if len(set(self.measure_layers)) < 2 or min(self.measure_layers) < 1:
            raise BenchmarkInputError(
                f"--measure_layers={self.measure_layers}: pass at least two different depths of at least 1 "
                "(the first two fit the per-layer slope), e.g. --measure_layers=[1,2,4]."
            )
        if self.measure_width != "full" and not (
            self.measure_width.isdigit() and int(self.measure_width) > 0
        ):
            raise BenchmarkInputError(
                f"--measure_width={self.measure_width}: pass full (the preset's width) or a number of heads of 128."
            )

    @property
    def heads(self) -> int | None:
        """Heads of 128 the activations are measured at (None: the preset's own width)."""
        return None if self.measure_width == "full" else int(self.measure_width)


class LatentLoss(nn.Module):
    """AIM's Stage I loss on fixed random latents of a preset's shapes (no codec, no text encoder), as
    a module lerobot-train's ``update_policy`` can step: ``forward(batch)`` returns (loss, logs)."""

    def __init__(self, model: AIMTransformer, action_dim: int, views: int = 3, batch: int = 1):
        super().__init__()
        from lerobot_aim.modeling_aim import DTYPES

        self.model = model
        device, dtype = next(model.parameters()).device, DTYPES[model.config.dtype]
        self.context, self.noise = inputs(model.config, action_dim, batch, views, device, dtype)
        self.sigma = torch.full((batch,), 0.5, device=device)

    def forward(self, batch=None):
        n, sigma = self.noise, self.sigma
        pred = self.model(self.context, n, sigma, sigma)
        loss = sum(
            (p.float() - t.float()).square().mean()
            for p, t in ((pred.rgb, n.rgb), (pred.value, n.value), (pred.actions, n.actions))
            if p is not None
        )
        return loss, {}


def build(config, action_dim: int, device="cpu") -> AIMTransformer:
    """The preset's network with the policy's dtypes and freezing (AIMPolicy.__init__'s choices)."""
    from lerobot_aim.modeling_aim import DTYPES

    with torch.device(device):
        model = AIMTransformer(config, action_dim, latent_channels(config)).set_dtype(DTYPES[config.dtype])
    if config.freeze_rgb_stream:
        model.rgb.requires_grad_(False)
    return model


def lerobot_update(module: nn.Module, config, profile: bool = False) -> dict:
    """Two updates through lerobot-train's ``update_policy`` (the second in steady state); returns the
    bytes per weight dtype of weights, gradients and optimizer state, and with ``profile`` the peak
    of each memory category of the second update (PyTorch's memory profiler)."""
    from accelerate import Accelerator
    from lerobot.scripts.lerobot_train import update_policy
    from lerobot.utils.logging_utils import AverageMeter, MetricsTracker

    accelerator = Accelerator(mixed_precision={"bfloat16": "bf16"}.get(config.dtype, "no"), cpu=True)
    trained = [p for p in module.parameters() if p.requires_grad]
    optimizer = config.get_optimizer_preset().build(trained)
    module, optimizer = accelerator.prepare(module, optimizer)
    grads: dict[str, int] = {}

    def count_grads(opt, args, kwargs):
        for p in trained:
            if p.grad is not None:
                grads[str(p.dtype)] = grads.get(str(p.dtype), 0) + p.grad.numel() * p.grad.element_size()

    optimizer.optimizer.register_step_pre_hook(count_grads)
    meters = {k: AverageMeter(k) for k in ("loss", "grad_norm", "lr", "update_s", "dataloading_s")}
    tracker = MetricsTracker(1, 1, 1, meters)

    def update():
        update_policy(tracker, module, None, optimizer, config.optimizer_grad_clip_norm, accelerator)

    update()
    grads.clear()
    peaks = profile_peaks(update) if profile else update()
    weights, states = {}, {}
    for p in module.parameters():
        weights[str(p.dtype)] = weights.get(str(p.dtype), 0) + p.numel() * p.element_size()
    for p, state in optimizer.optimizer.state.items():
        size = sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
        states[str(p.dtype)] = states.get(str(p.dtype), 0) + size
    numel = {}
    for p in module.parameters():
        numel[str(p.dtype)] = numel.get(str(p.dtype), 0) + p.numel()
    return {
        "numel": numel,
        "weights": weights,
        "grads": grads,
        "optimizer": states,
        "peaks": peaks,
        "loss": tracker.loss.val,
    }


def profile_peaks(step) -> dict[str, int]:
    """Peak bytes of each category (PyTorch's memory profiler, CPU) while ``step()`` runs, and the peak
    of what is neither a weight, a gradient nor optimizer state (activations, temporaries, inputs)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfileTimeline

    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    sizes = torch.tensor(sizes, dtype=torch.float64)
    column = {(c.name.lower() if c is not None else "unknown"): i + 1 for c, i in _CATEGORY_TO_INDEX.items()}
    peaks = {name: int(sizes[:, i].max()) for name, i in column.items()}
    states = sizes[:, [column["parameter"], column["gradient"], column["optimizer_state"]]].sum(1)
    peaks["beyond_states"] = int((sizes.sum(1) - states).max())
    return peaks


def activation_gib_per_layer(
    preset: str, measure_layers: list[int], heads: int | None, action_dim: int, overrides: dict | None = None
) -> dict:
    """Activation peak per sample (GiB) at the measured depths, its per-layer slope and intercept,
    scaled from ``heads`` x 128 to the preset's width (by width ratio) when ``heads`` is given;
    ``overrides`` change the preset otherwise (and are not scaled back)."""
    measured = {}
    base = overrides or {}
    for layers in measure_layers:
        overrides = {**base, "num_layers": layers, "device": "cpu"}
        if heads is not None:
            width = heads * 128  # every width scaled by width / 3072, as the preset's ratios
            overrides.update(
                num_attention_heads=heads,
                ffn_dim=width * 14336 // 3072,
                action_width=width // 3,
                action_ffn_dim=4 * (width // 3),
            )
        config = load_preset(preset, **overrides)
        torch.manual_seed(0)
        peaks = lerobot_update(LatentLoss(build(config, action_dim), action_dim), config, profile=True)[
            "peaks"
        ]
        measured[layers] = peaks["beyond_states"] / GIB
    (l0, a0), (l1, a1) = sorted(measured.items())[:2]  # the fit; further depths check it
    slope = (a1 - a0) / (l1 - l0)
    scale = 1.0 if heads is None else load_preset(preset).num_attention_heads / heads
    check = {n: (a - (a0 + slope * (n - l0))) / a for n, a in measured.items() if n not in (l0, l1)}
    return {
        "measured_gib": measured,
        "per_layer_gib": slope * scale,
        "base_gib": (a0 - slope * l0) * scale,
        "width_scale": scale,
        "linear_fit_relative_error": check,
    }


def bf16_unchanged_fraction(config) -> float:
    """Share of a freshly initialised 3072 x 3072 bf16 weight that one step of the preset's AdamW
    (its learning rate) leaves unchanged: updates under half a bf16 step are rounded away."""
    torch.manual_seed(0)
    layer = nn.Linear(3072, 3072).to(torch.bfloat16)
    optimizer = config.get_optimizer_preset().build(list(layer.parameters()))
    before = layer.weight.detach().clone()
    layer(torch.randn(64, 3072, dtype=torch.bfloat16)).float().square().mean().backward()
    optimizer.step()
    return (layer.weight == before).float().mean().item()


def parameter_counts(config, action_dim: int) -> dict:
    """Trained and frozen weights of the preset's network by dtype (meta device, full depth)."""
    model = build(config, action_dim, device="meta")
    counts = {"trained": {}, "frozen": {}}
    for p in model.parameters():
        side = counts["trained" if p.requires_grad else "frozen"]
        side[str(p.dtype)] = side.get(str(p.dtype), 0) + p.numel()
    return counts


def frozen_encoder_gib(dtype_bytes: int) -> dict:
    """UMT5-XXL's encoder and the Wan2.2-TI2V-5B VAE (configs of the released model), in GiB."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        umt5 = sum(p.numel() for p in UMT5EncoderModel(UMT5Config(**UMT5_XXL)).parameters())
        vae = sum(p.numel() for p in AutoencoderKLWan(**WAN22_VAE).parameters())
    return {
        "umt5_params": umt5,
        "vae_params": vae,
        "umt5_gib": umt5 * dtype_bytes / GIB,
        "vae_gib": vae * dtype_bytes / GIB,
    }


def dtype_bytes(name: str) -> int:
    """Bytes per element of a dtype named as ``str(torch.bfloat16)`` or ``"bfloat16"``."""
    return torch.empty(0, dtype=getattr(torch, name.removeprefix("torch."))).element_size()


def rows(
    preset: str, per_weight: dict, activations: dict, frozen: dict, gpus: list[int], action_dim: int
) -> list[dict]:
    """The table: one row per variant x setting x GPU count (GiB per GPU, batch 1 per GPU)."""
    out = []
    encoders = frozen["umt5_gib"] + frozen["vae_gib"]
    for variant, overrides in VARIANTS.items():
        config = load_preset(preset, device="cpu", **overrides)
        counts = parameter_counts(config, action_dim)
        layers = config.num_layers
        act = activations["base_gib"] + activations["per_layer_gib"] * layers
        trained = sum(counts["trained"].values())
        frozen_net = sum(n * dtype_bytes(d) for d, n in counts["frozen"].items()) / GIB

        weights, grads, optim = (  # lerobot-train's bytes for the trained weights, from the measured ratios
            sum(n * per_weight[kind][d] / per_weight["numel"][d] for d, n in counts["trained"].items()) / GIB
            for kind in ("weights", "grads", "optimizer")
        )
        inference = (weights + frozen_net) + encoders
        for n in gpus:
            ddp_buckets = grads if n > 1 else 0.0
            settings = {
                "lerobot-train (1 GPU; DDP)": (weights + frozen_net, grads + ddp_buckets, optim),
                "FSDP2 mixed precision": (
                    (trained * 4 + frozen_net * GIB) / GIB / n,
                    trained * 4 / GIB / n,
                    trained * 8 / GIB / n,
                ),
                "FSDP2 + CPU offload": (0.0, 0.0, 0.0),
            }
            for setting, (w, g, o) in settings.items():
                total = w + g + o + act + encoders
                out.append(
                    {
                        "variant": variant,
                        "setting": setting,
                        "gpus": n,
                        "trained_params_b": trained / 1e9,
                        "weights_gib": w,
                        "grads_gib": g,
                        "optimizer_gib": o,
                        "activations_gib": act,
                        "frozen_encoders_gib": encoders,
                        "total_gib": total,
                        "fits_80gb": total < GPU_GIB["80 GB"],
                    }
                )
        out.append(
            {
                "variant": variant,
                "setting": "inference (bf16 weights)",
                "gpus": 1,
                "trained_params_b": 0.0,
                "weights_gib": inference - encoders,
                "grads_gib": 0.0,
                "optimizer_gib": 0.0,
                "activations_gib": None,
                "frozen_encoders_gib": encoders,
                "total_gib": inference,
                "fits_80gb": True,
                "fits_24gb": inference < GPU_GIB["24 GB"],
                "fits_24gb_umt5_on_cpu": inference - frozen["umt5_gib"] < GPU_GIB["24 GB"],
            }
        )
    return out


def table_row(r: dict) -> str:
    """One row of the table (the inference rows also say whether they fit a 24 GB card)."""
    activations = "not measured" if r["activations_gib"] is None else round(r["activations_gib"], 2)
    fits = "yes" if r["fits_80gb"] else "no"
    if "fits_24gb" in r:
        fits += (
            f" (24 GB: {'yes' if r['fits_24gb'] else 'no'}; "
            f"UMT5 on CPU: {'yes' if r['fits_24gb_umt5_on_cpu'] else 'no'})"
        )
    return (
        f"| {r['variant']} | {r['setting']} | {r['gpus']} | {r['trained_params_b']:.2f} | {r['weights_gib']:.1f} | "
        f"{r['grads_gib']:.1f} | {r['optimizer_gib']:.1f} | {activations} | "
        f"{r['frozen_encoders_gib']:.1f} | {r['total_gib']:.1f} | {fits} |"
    )


@parser.wrap()
def memory(cfg: MemoryConfig) -> dict:
    config = load_preset(cfg.preset, device="cpu")
    narrow = load_preset(
        cfg.preset,
        device="cpu",
        num_layers=1,
        num_attention_heads=2,
        ffn_dim=512,
        action_width=128,
        action_ffn_dim=256,
    )
    torch.manual_seed(0)
    per_weight = lerobot_update(LatentLoss(build(narrow, cfg.action_dim), cfg.action_dim), narrow)
    activations = activation_gib_per_layer(cfg.preset, cfg.measure_layers, cfg.heads, cfg.action_dim)
    frozen = frozen_encoder_gib(dtype_bytes(config.dtype))
    table_rows = rows(cfg.preset, per_weight, activations, frozen, cfg.gpus, cfg.action_dim)
    bytes_per_weight = {
        d: {k: per_weight[k].get(d, 0) / n for k in ("weights", "grads", "optimizer")}
        for d, n in per_weight["numel"].items()
    }
    unchanged = bf16_unchanged_fraction(config)
    header = (
        f"One AdamW step at lr {config.optimizer_lr:g} leaves {100 * unchanged:.0f}% of a bf16 3072 x 3072 weight "
        "unchanged (measured): pure-bf16 training loses most updates; FSDP2 mixed precision keeps fp32 "
        "master weights.\n\n"
        f"lerobot-train keeps, per weight (bytes, measured): {bytes_per_weight}\n\n"
        f"Activations per sample (GiB, measured at depths {','.join(map(str, cfg.measure_layers))}, width "
        f"{cfg.measure_width}): {activations}\n\nFrozen encoders: {frozen}\n\n"
        "| variant | setting | GPUs | trained (B) | weights | grads | optimizer | activations/sample | "
        "UMT5+VAE | total per GPU (GiB) | fits 80 GB |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    table = header + "\n".join(table_row(r) for r in table_rows)
    result = {
        "preset": cfg.preset,
        "bytes_per_weight": bytes_per_weight,
        "bf16_unchanged_fraction": unchanged,
        "activations": activations,
        "frozen": frozen,
        "rows": table_rows,
    }
    path = write(f"memory_{cfg.preset}", result, table)
    print(table)
    print(f"written to {path}")
    return result


def main() -> None:
    run_command(memory, "benchmarks.memory")


if __name__ == "__main__":
    main()
