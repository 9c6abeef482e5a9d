"""Parameter count of each AIM stream for a preset, built on the meta device (no weights, no memory).

    python -m benchmarks.param_count --preset=aim_wan22_5b [--action_dim=14]

For aim_wan22_5b the RGB stream must equal diffusers' WanTransformer3DModel for Wan2.2-TI2V-5B:
4,999,787,712 parameters.
"""

import json
from dataclasses import dataclass

import torch
from lerobot.configs import parser

from benchmarks.common import check_at_least_one, check_preset
from lerobot_aim import load_preset
from lerobot_aim.cli import run_command
from lerobot_aim.model import AIMTransformer

LATENT_CHANNELS = {"wan_vae": 48}


@dataclass
class ParamCountConfig:
    # Preset whose network is counted (a config under configs/).
    preset: str = "aim_wan22_5b"
    # Action dimension (sizes the action encoder and decoder).
    action_dim: int = 14

    def __post_init__(self) -> None:
        check_preset(self.preset)
        check_at_least_one(action_dim=self.action_dim)


def latent_channels(config) -> int:
    """Channels of the codec's latents: the Wan2.2 VAE's 48, or 3 x patch^2 for the pixel codec."""
    return LATENT_CHANNELS.get(config.codec, 3 * config.pixel_patch_size**2)


def parameter_counts(preset: str, action_dim: int) -> dict[str, int]:
    config = load_preset(preset, device="cpu")
    with torch.device("meta"):
        model = AIMTransformer(config, action_dim=action_dim, latent_channels=latent_channels(config))
    streams = [name for name in ("rgb", "value", "action") if getattr(model, name) is not None]
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in streams}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


@parser.wrap()
def param_count(cfg: ParamCountConfig) -> dict[str, int]:
    counts = parameter_counts(cfg.preset, cfg.action_dim)
    for name, count in counts.items():
        print(f"{name:>6}: {count:>15,}")
    print(json.dumps(counts))
    return counts


def main() -> None:
    run_command(param_count, "benchmarks.param_count")


if __name__ == "__main__":
    main()
