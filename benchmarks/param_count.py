"""Parameter count of each AIM stream for a preset, built on the meta device (no weights, no memory).

    python benchmarks/param_count.py --preset aim_wan22_5b [--action_dim 14]

For aim_wan22_5b the RGB stream must equal diffusers' WanTransformer3DModel for Wan2.2-TI2V-5B:
4,999,787,712 parameters.
"""

from __future__ import annotations

import argparse
import json

import torch

from lerobot_aim import load_preset
from lerobot_aim.model import AIMTransformer

LATENT_CHANNELS = {"wan_vae": 48}


def latent_channels(config) -> int:
    """Channels of the codec's latents: the Wan2.2 VAE's 48, or 3 x patch^2 for the pixel codec."""
    return LATENT_CHANNELS.get(config.codec, 3 * config.pixel_patch_size**2)


def parameter_counts(preset: str, action_dim: int) -> dict[str, int]:
    config = load_preset(preset, device="cpu")
    with torch.device("meta"):
        model = AIMTransformer(config, action_dim=action_dim, latent_channels=latent_channels(config))
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("rgb", "value", "action")
              if getattr(model, name) is not None}  # fmt: skip
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="aim_wan22_5b")
    parser.add_argument("--action_dim", type=int, default=14)
    args = parser.parse_args()
    counts = parameter_counts(args.preset, args.action_dim)
    for name, count in counts.items():
        print(f"{name:>6}: {count:>15,}")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
