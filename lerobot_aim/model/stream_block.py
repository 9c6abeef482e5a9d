"""One stream's share of an AIM layer: Wan2.2's transformer block with its self-attention opened up.

The parameters and their names are those of diffusers' ``WanTransformerBlock`` (norm1, attn1.to_q /
to_k / to_v / to_out.0 / norm_q / norm_k, attn2, norm2, ffn, norm3, scale_shift_table), so Wan2.2
weights load without a translation table. A stream narrower than the attention space (the action
stream) has the same modules; its ``attn1`` projects ``dim -> heads * head_dim`` and back
(paper Eq. Q_s = h_s W_Q,s). Each stream keeps its own AdaLN modulation and feed-forward; the
self-attention over all streams' tokens is done by the caller (:mod:`lerobot_aim.model.mot`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import PixArtAlphaTextProjection, TimestepEmbedding, Timesteps
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor
from torch import nn

from lerobot_aim.model.rope import apply_rope


class StreamBlock(nn.Module):
    """AdaLN block of one stream (DiT / Wan2.2 style).

    x -> norm1 * (1 + scale) + shift -> q, k, v          (attention done by the caller)
    x += gate * to_out(attention)                          gated residual
    x += attn2(norm2(x), text)                             RGB stream only: language
    x += c_gate * ffn(norm3(x) * (1 + c_scale) + c_shift)  gated residual
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        ffn_dim: int,
        cross_attention: bool,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim=dim, heads=num_heads, dim_head=head_dim, eps=eps)
        self.attn2 = None
        if cross_attention:
            self.attn2 = WanAttention(
                dim=dim,
                heads=num_heads,
                dim_head=dim // num_heads,
                eps=eps,
                cross_attention_dim_head=dim // num_heads,
                processor=WanAttnProcessor(),
            )
            self.norm2 = (
                FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
            )
        self.ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def modulation(self, timestep_proj: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Six (B, L or 1, dim) fp32 tensors from the per-token time projection (B, L or 1, 6, dim)."""
        return (self.scale_shift_table.unsqueeze(0) + timestep_proj.float()).unbind(dim=2)

    def qkv(self, hidden: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor):
        """Queries, keys, values (B, L, heads, head_dim) of this stream's tokens in the shared space."""
        x = (self.norm1(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        q = self.attn1.norm_q(self.attn1.to_q(x))
        k = self.attn1.norm_k(self.attn1.to_k(x))
        v = self.attn1.to_v(x)
        return (t.unflatten(-1, (self.num_heads, -1)) for t in (q, k, v))

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, Lt, heads, head_dim) of the projected instruction (B, Lt, dim) for the
        cross-attention. They depend on the text alone, so sampling computes them once per chunk."""
        key = self.attn2.norm_k(self.attn2.to_k(text)).unflatten(2, (self.attn2.heads, -1))
        return key, self.attn2.to_v(text).unflatten(2, (self.attn2.heads, -1))

    def cross_attend(self, hidden: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Language cross-attention from :meth:`text_kv` (what diffusers' ``WanAttnProcessor`` computes)."""
        x = self.norm2(hidden.float()).type_as(hidden)
        query = self.attn2.norm_q(self.attn2.to_q(x)).unflatten(2, (self.attn2.heads, -1))
        q, k, v = (t.transpose(1, 2) for t in (query, *text_kv))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2).type_as(query)
        return self.attn2.to_out[0](out)

    def finish(
        self,
        hidden: torch.Tensor,
        attention: torch.Tensor,
        gate: torch.Tensor,
        c_shift: torch.Tensor,
        c_scale: torch.Tensor,
        c_gate: torch.Tensor,
        text_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Everything after the self-attention: output projection, language, feed-forward.

        Args:
            hidden: (B, L, dim) the block's input.
            attention: (B, L, heads * head_dim) the shared attention's output for these tokens.
            text_kv: the instruction's keys and values (:meth:`text_kv`) for the RGB stream; None for
                streams that do not read language (the value stream too when it shares these blocks).
        """
        out = self.attn1.to_out[0](attention)
        hidden = (hidden.float() + out * gate).type_as(hidden)
        if text_kv is not None:
            hidden = hidden + self.cross_attend(hidden, text_kv)
        x = (self.norm3(hidden.float()) * (1 + c_scale) + c_shift).type_as(hidden)
        return (hidden.float() + self.ffn(x).float() * c_gate).type_as(hidden)

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb):
        """Self-attention over this stream alone: ``WanTransformerBlock.forward``'s contract."""
        if temb.ndim == 3:  # (B, 6, dim): one timestep per sample
            temb = temb.unsqueeze(1)
        shift, scale, gate, c_shift, c_scale, c_gate = self.modulation(temb)
        q, k, v = self.qkv(hidden_states, shift, scale)
        q, k = apply_rope(q, *rotary_emb), apply_rope(k, *rotary_emb)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2).type_as(q)
        text_kv = self.text_kv(encoder_hidden_states) if self.attn2 is not None else None
        return self.finish(hidden_states, out, gate, c_shift, c_scale, c_gate, text_kv)


class TimeEmbedding(nn.Module):
    """Wan2.2's timestep path (sinusoid -> MLP -> SiLU -> 6 * dim), names as in its condition embedder."""

    def __init__(self, dim: int, freq_dim: int):
        super().__init__()
        self.timesteps_proj = Timesteps(num_channels=freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedder = TimestepEmbedding(in_channels=freq_dim, time_embed_dim=dim)
        self.act_fn = nn.SiLU()
        self.time_proj = nn.Linear(dim, 6 * dim)

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """timesteps (B, L) or (B,) in [0, 1000] -> temb (..., dim), timestep_proj (..., 6, dim)."""
        emb = self.timesteps_proj(timesteps.flatten()).unflatten(0, timesteps.shape)
        emb = emb.to(next(self.time_embedder.parameters()).dtype)
        temb = self.time_embedder(emb).to(dtype)
        return temb, self.time_proj(self.act_fn(temb)).unflatten(-1, (6, -1))


class WanConditionEmbedder(TimeEmbedding):
    """The RGB stream's condition embedder: the time path plus Wan's text projection (text_dim -> dim)."""

    def __init__(self, dim: int, freq_dim: int, text_dim: int):
        super().__init__(dim, freq_dim)
        self.text_embedder = PixArtAlphaTextProjection(text_dim, dim, act_fn="gelu_tanh")


def add_output_head(stream: nn.Module, dim: int, out_dim: int, eps: float = 1e-6) -> None:
    """Give a stream Wan's output modules, at the top level where Wan's checkpoint names them."""
    stream.norm_out = FP32LayerNorm(dim, eps, elementwise_affine=False)
    stream.proj_out = nn.Linear(dim, out_dim)
    stream.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)


def project_out(stream: nn.Module, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """Final AdaLN and projection: hidden (B, L, dim), temb (B, L or 1, dim) -> (B, L, out_dim)."""
    shift, scale = (stream.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).unbind(dim=2)
    return stream.proj_out((stream.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden))
