"""The RGB stream: Wan2.2's video transformer, with its blocks opened up for shared attention.

``WanRGBStream`` takes the same constructor arguments, state-dict names and ``forward`` contract as
diffusers' ``WanTransformer3DModel``, so a Wan2.2 checkpoint folder (``config.json`` + safetensors,
e.g. ``Wan-AI/Wan2.2-TI2V-5B-Diffusers/transformer``) loads into it directly, and called alone it
returns what diffusers returns. AIM uses its pieces (patch embedding, per-token time modulation,
text projection, blocks, output head) inside the three-stream layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from lerobot_aim.model.rope import frame_positions, rope_cos_sin
from lerobot_aim.model.sources import resolve_component
from lerobot_aim.model.stream_block import StreamBlock, WanConditionEmbedder, add_output_head, project_out


def patchify(latents: torch.Tensor, patch_embedding: nn.Conv3d) -> torch.Tensor:
    """(B, C, F, H, W) latents -> (B, F * H/ph * W/pw, dim) tokens, frame-major."""
    return patch_embedding(latents).flatten(2).transpose(1, 2)


def unpatchify(
    tokens: torch.Tensor, grid: tuple[int, int, int], patch_size: tuple[int, int, int]
) -> torch.Tensor:
    """(B, F*h*w, p_t*p_h*p_w*C) -> (B, C, F*p_t, h*p_h, w*p_w), the inverse of Wan's patch layout."""
    (f, h, w), (pt, ph, pw) = grid, patch_size
    x = tokens.reshape(tokens.shape[0], f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


class WanRGBStream(ModelMixin, ConfigMixin):
    """Wan2.2 video transformer (same arguments as ``WanTransformer3DModel``); the RGB stream ``x``."""

    _supports_gradient_checkpointing = True
    _keep_in_fp32_modules = ["time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]
    _no_split_modules = ["StreamBlock"]
    _keys_to_ignore_on_load_unexpected = ["norm_added_q"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        in_channels: int = 48,
        out_channels: int = 48,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 14336,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
    ):
        super().__init__()
        if image_dim is not None or added_kv_proj_dim is not None or qk_norm != "rms_norm_across_heads":
            raise ValueError(
                "WanRGBStream supports Wan2.1/2.2 text-to-video and TI2V transformers (no image embedder, "
                f"qk_norm 'rms_norm_across_heads'); got image_dim={image_dim}, "
                f"added_kv_proj_dim={added_kv_proj_dim}, qk_norm={qk_norm!r}."
            )
        dim = num_attention_heads * attention_head_dim
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.condition_embedder = WanConditionEmbedder(dim, freq_dim, text_dim)
        self.blocks = nn.ModuleList(
            StreamBlock(dim, num_attention_heads, attention_head_dim, ffn_dim, True, cross_attn_norm, eps)
            for _ in range(num_layers)
        )
        add_output_head(self, dim, (out_channels or in_channels) * math.prod(patch_size), eps)
        self.gradient_checkpointing = False

    @classmethod
    def from_diffusers(
        cls,
        folder_or_module: str | Path | nn.Module,
        subfolder: str | None = None,
        torch_dtype=None,
        **kwargs,
    ) -> WanRGBStream:
        """Build the stream from a diffusers ``WanTransformer3DModel`` (folder, Hub id or module).

        A folder is loaded by diffusers' own loader: modules are created on the meta device and
        the safetensors shards are streamed into them, so the 5B model is never held twice. A pipeline
        folder or Hub id whose transformer sits in ``transformer/`` is found without naming the
        subfolder (:func:`~lerobot_aim.model.sources.resolve_component`).
        """
        if isinstance(folder_or_module, nn.Module):
            stream = cls.from_config(folder_or_module.config)
            stream.load_state_dict(folder_or_module.state_dict())
            return stream.to(torch_dtype) if torch_dtype is not None else stream
        if subfolder is None:
            folder_or_module, subfolder = resolve_component(
                folder_or_module, "transformer", "Wan transformer (WanTransformer3DModel)", "--policy.wan_path"
            )
        return cls.from_pretrained(folder_or_module, subfolder=subfolder, torch_dtype=torch_dtype, **kwargs)

    @property
    def dim(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    def time_modulation(self, timesteps: torch.Tensor, dtype: torch.dtype):
        """Per-token (B, L) timesteps -> temb (B, L, dim), timestep_proj (B, L, 6, dim)."""
        return self.condition_embedder(timesteps, dtype)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
    ):
        """``WanTransformer3DModel.forward``: latents (B, C, F, H, W), timestep (B,) or per token (B, L)."""
        if encoder_hidden_states_image is not None:
            raise ValueError(
                "WanRGBStream has no image embedder (I2V); pass encoder_hidden_states_image=None."
            )
        _, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        grid = (frames // p_t, height // p_h, width // p_w)
        rope = rope_cos_sin(frame_positions(*grid).to(hidden_states.device), self.config.attention_head_dim)

        tokens = patchify(hidden_states, self.patch_embedding)
        per_sample = timestep.ndim == 1
        temb, timestep_proj = self.time_modulation(
            timestep[:, None] if per_sample else timestep, tokens.dtype
        )
        text = self.condition_embedder.text_embedder(encoder_hidden_states)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(block, tokens, text, timestep_proj, rope)
            else:
                tokens = block(tokens, text, timestep_proj, rope)
        output = unpatchify(project_out(self, tokens, temb), grid, self.config.patch_size)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)
