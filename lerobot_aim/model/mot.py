"""AIMTransformer: the three-stream Mixture-of-Transformers with intent-causal attention.

Per layer, every stream computes queries, keys and values of its own tokens with its own weights
(paper Sec. 4.3.2, Q_s = h_s W_Q,s); all tokens meet in one masked attention (Sec. 4.3.3,
h~_s = Attn(Q_s, K(V_s), V(V_s))); each stream then applies its own output projection,
feed-forward and (RGB only) cross-attention to language.

Streams and their tokens:
- RGB ``x`` (:class:`WanRGBStream`): the clean context frames (noise level 0, as Wan2.2 TI2V treats
  its conditioning frame) and the noisy future frames.
- value ``m`` (:class:`ValueStream`): the noisy future value maps, at the same noise level as x.
- action ``a`` (:class:`ActionStream`): the clean past actions and the noisy future actions.

The context (observation frames, past actions, instruction) never reads the future, so
:meth:`AIMTransformer.encode_context` runs it once and keeps every layer's keys and values (those of
the instruction's cross-attention too); :meth:`AIMTransformer.denoise` then runs only the future
tokens against that cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lerobot_aim.model.action_stream import ActionStream
from lerobot_aim.model.attention_mask import Group, dense_mask, flex_block_mask, rule_table
from lerobot_aim.model.flow_matching import NUM_TRAIN_TIMESTEPS, euler_step, inference_sigmas
from lerobot_aim.model.layout import TokenLayout, action_layout, frame_layout, observation_layout
from lerobot_aim.model.rope import apply_rope, rope_cos_sin
from lerobot_aim.model.stream_block import project_out
from lerobot_aim.model.value_stream import ValueStream
from lerobot_aim.model.wan_stream import WanRGBStream, patchify, unpatchify

FP32_MODULES = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_out")


@dataclass
class StreamTokens:
    """One stream's tokens in one pass: hidden (B, L, dim), time embedding (B, L, dim) and its
    per-token projection (B, L, 6, dim), and where they sit (:class:`TokenLayout`)."""

    hidden: torch.Tensor
    temb: torch.Tensor
    timestep_proj: torch.Tensor
    layout: TokenLayout


@dataclass
class ContextCache:
    """Keys and values (B, Lc, heads, head_dim) of the context in every layer, with its layout,
    and every layer's keys and values (B, Lt, heads, head_dim) of the instruction that the RGB
    stream cross-attends to."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    layout: TokenLayout
    text_kv: list[tuple[torch.Tensor, torch.Tensor]]
    num_obs_frames: int
    grid_hw: tuple[int, int]


@dataclass
class Prediction:
    """Velocities (training) or clean samples (sampling) of the future streams.

    rgb, value: (B, C, h, H, W) latents (value is None without a value stream); actions (B, H, A).
    """

    rgb: torch.Tensor
    value: torch.Tensor | None
    actions: torch.Tensor


class AIMTransformer(nn.Module):
    def __init__(self, config, action_dim: int, latent_channels: int, rgb: WanRGBStream | None = None):
        super().__init__()
        self.config = config
        heads, head_dim = config.num_attention_heads, config.attention_head_dim
        self.rgb = rgb or WanRGBStream(
            patch_size=config.patch_size,
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=latent_channels,
            out_channels=latent_channels,
            text_dim=config.text_dim,
            freq_dim=config.freq_dim,
            ffn_dim=config.ffn_dim,
            num_layers=config.num_layers,
        )
        self._check_rgb_stream(latent_channels)
        self.value = None
        if config.attention_mode != "no_value":
            self.value = ValueStream(
                config.hidden_size, heads, head_dim, config.ffn_dim, config.num_layers, latent_channels,
                config.patch_size, config.freq_dim, shared_blocks=config.share_value_weights,
            )  # fmt: skip
            self.value.copy_from_rgb(self.rgb)
        self.action = ActionStream(
            action_dim,
            config.action_width,
            heads,
            head_dim,
            config.action_ffn_dim,
            config.num_layers,
            config.freq_dim,
        )
        self.register_buffer("rule", rule_table(config.attention_mode), persistent=False)
        self._masks: dict = {}

    def _check_rgb_stream(self, latent_channels: int) -> None:
        rgb, cfg = self.rgb.config, self.config
        expected = {
            "num_attention_heads": cfg.num_attention_heads,
            "attention_head_dim": cfg.attention_head_dim,
            "num_layers": cfg.num_layers,
            "ffn_dim": cfg.ffn_dim,
            "in_channels": latent_channels,
            "text_dim": cfg.text_dim,
            "patch_size": tuple(cfg.patch_size),
        }
        wrong = {k: (rgb[k] if k != "patch_size" else tuple(rgb[k]), v) for k, v in expected.items()}
        wrong = {k: pair for k, pair in wrong.items() if pair[0] != pair[1]}
        if wrong:
            details = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in wrong.items())
            raise ValueError(
                f"The Wan transformer does not fit this AIM config ({details}); use a matching preset."
            )

    # ------------------------------------------------------------------------------------------
    # Token embedding
    def _video_tokens(
        self, stream, latents, sigma, layout, extra: torch.Tensor | None = None
    ) -> StreamTokens:
        """Frame tokens of a stream; ``sigma`` (B, L) per-token noise levels in [0, 1]."""
        hidden = patchify(latents, stream.patch_embedding)
        if extra is not None:
            hidden = hidden + extra.to(hidden.dtype)
        temb, proj = stream.condition_embedder(sigma * NUM_TRAIN_TIMESTEPS, hidden.dtype)
        return StreamTokens(hidden, temb, proj, layout.to(hidden.device))

    def _action_tokens(self, actions, sigma, layout) -> StreamTokens:
        hidden = self.action.action_encoder(actions.to(self.action.action_encoder[0].weight.dtype))
        temb, proj = self.action.condition_embedder(sigma * NUM_TRAIN_TIMESTEPS, hidden.dtype)
        return StreamTokens(hidden, temb, proj, layout.to(hidden.device))

    @staticmethod
    def _per_token(sigmas: list[tuple[torch.Tensor | float, int]], batch: int, device) -> torch.Tensor:
        """(B, L) noise levels from (sigma per sample or scalar, token count) segments."""
        parts = [
            torch.as_tensor(s, device=device, dtype=torch.float32).reshape(-1, 1).expand(batch, n)
            for s, n in sigmas
        ]
        return torch.cat(parts, dim=1)

    def _grid(self, latents: torch.Tensor) -> tuple[int, int]:
        _, ph, pw = self.config.patch_size
        return latents.shape[-2] // ph, latents.shape[-1] // pw

    def _context_tokens(self, obs_latents, past_actions) -> dict[str, StreamTokens]:
        batch, frames = obs_latents.shape[0], obs_latents.shape[2]
        grid = self._grid(obs_latents)
        obs_layout = observation_layout(frames, grid)
        tokens = {
            "rgb": self._video_tokens(
                self.rgb,
                obs_latents,
                self._per_token([(0.0, len(obs_layout))], batch, obs_latents.device),
                obs_layout,
            )
        }
        num_past = past_actions.shape[1]
        past_layout = action_layout(
            Group.PAST_ACTIONS, -num_past, num_past, frames - 1, self.config.actions_per_latent_frame
        )
        tokens["action"] = self._action_tokens(
            past_actions, self._per_token([(0.0, num_past)], batch, past_actions.device), past_layout
        )
        return tokens  # fmt: skip

    def _future_tokens(
        self, num_obs_frames, grid, noisy_rgb, noisy_value, video_sigma, noisy_actions, action_sigma
    ):
        batch, horizon = noisy_rgb.shape[0], noisy_rgb.shape[2]
        rgb_layout = frame_layout(Group.FUTURE_RGB, num_obs_frames, horizon, grid)
        sigma_v = self._per_token([(video_sigma, len(rgb_layout))], batch, noisy_rgb.device)
        tokens = {"rgb": self._video_tokens(self.rgb, noisy_rgb, sigma_v, rgb_layout)}
        if self.value is not None:
            value_layout = frame_layout(Group.FUTURE_VALUE, num_obs_frames, horizon, grid)
            tokens["value"] = self._video_tokens(
                self.value, noisy_value, sigma_v, value_layout, extra=self.value.value_noise_embedding
            )
        act_layout = action_layout(
            Group.FUTURE_ACTIONS,
            0,
            noisy_actions.shape[1],
            num_obs_frames - 1,
            self.config.actions_per_latent_frame,
        )
        sigma_a = self._per_token([(action_sigma, noisy_actions.shape[1])], batch, noisy_actions.device)
        tokens["action"] = self._action_tokens(noisy_actions, sigma_a, act_layout)
        return tokens

    # ------------------------------------------------------------------------------------------
    # Attention
    def _mask(self, key: tuple, q_layout: TokenLayout, k_layout: TokenLayout, device):
        """Dense bool mask (SDPA) or FlexAttention block mask, memoised per token layout."""
        backend = self.config.attention_backend
        if backend == "auto":
            backend = "flex" if device.type == "cuda" else "sdpa"
        key = (*key, backend, str(device))
        if key not in self._masks:
            build = flex_block_mask if backend == "flex" else dense_mask
            q, k = q_layout.to(device), k_layout.to(device)
            self._masks[key] = (backend, build(self.rule, q.groups, k.groups, q.times, k.times))
        return self._masks[key]

    @staticmethod
    def _attend(q, k, v, mask) -> torch.Tensor:
        """(B, L, heads, head_dim) q, k, v -> (B, Lq, heads * head_dim)."""
        backend, m = mask
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if backend == "flex":
            out = _flex_attention(q.device)(q, k, v, block_mask=m)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return out.transpose(1, 2).flatten(2).type_as(q)

    def _blocks(self, name: str):
        if name == "value" and self.value.blocks is None:
            return self.rgb.blocks
        return getattr(self, name).blocks

    def _text_kv(self, text: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the keys and values of the instruction (B, Lt, text_dim) for the RGB stream."""
        text = self.rgb.condition_embedder.text_embedder(text)
        return [block.text_kv(text) for block in self.rgb.blocks]

    def _layer(self, index, hiddens, tokens, rope, mask, text_kv, past_kv):
        """One MoT layer over the streams in ``tokens`` (in order); returns new hiddens and K/V."""
        qs, ks, vs, mods = [], [], [], []
        for name, hidden in zip(tokens, hiddens, strict=True):
            block = self._blocks(name)[index]
            mod = block.modulation(tokens[name].timestep_proj)
            q, k, v = block.qkv(hidden, mod[0], mod[1])
            qs.append(q), ks.append(k), vs.append(v), mods.append(mod)
        q, k, v = torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(vs, 1)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        kv = (k, v)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 1), torch.cat([past_kv[1], v], 1)
        out = self._attend(q, k, v, mask).split([h.shape[1] for h in hiddens], dim=1)
        new = []
        for name, hidden, attn, mod in zip(tokens, hiddens, out, mods, strict=True):
            block = self._blocks(name)[index]
            new.append(block.finish(hidden, attn, *mod[2:], text_kv=text_kv if name == "rgb" else None))
        return new, kv

    def _run_layers(self, tokens: dict[str, StreamTokens], mask, text_kv, cache: ContextCache | None = None):
        """All layers; returns final hiddens per stream and the per-layer K/V of these tokens.

        ``text_kv``: per layer, the instruction's keys and values (:meth:`_text_kv`)."""
        layout = TokenLayout.cat([t.layout for t in tokens.values()])
        first = next(iter(tokens.values())).hidden
        rope = rope_cos_sin(layout.positions.to(first.device), self.config.attention_head_dim)
        hiddens = [t.hidden for t in tokens.values()]
        keys, values = [], []
        for i in range(self.config.num_layers):
            past_kv = None if cache is None else (cache.keys[i], cache.values[i])
            if self.config.gradient_checkpointing and torch.is_grad_enabled():
                hiddens, (k, v) = checkpoint(
                    self._layer, i, hiddens, tokens, rope, mask, text_kv[i], past_kv, use_reentrant=False
                )
            else:
                hiddens, (k, v) = self._layer(i, hiddens, tokens, rope, mask, text_kv[i], past_kv)
            keys.append(k), values.append(v)
        return dict(zip(tokens, hiddens, strict=True)), keys, values

    # ------------------------------------------------------------------------------------------
    # Passes
    def _outputs(self, hiddens, tokens, skip: dict[str, int], grid, horizon) -> Prediction:
        def video(name):
            if name not in hiddens:
                return None
            s = skip.get(name, 0)
            out = project_out(getattr(self, name), hiddens[name][:, s:], tokens[name].temb[:, s:])
            return unpatchify(out, (horizon, *grid), self.config.patch_size)

        s = skip.get("action", 0)
        actions = project_out(self.action, hiddens["action"][:, s:], tokens["action"].temb[:, s:])
        return Prediction(video("rgb"), video("value"), actions)

    def forward(
        self,
        obs_latents: torch.Tensor,
        past_actions: torch.Tensor,
        text: torch.Tensor,
        noisy_rgb: torch.Tensor,
        noisy_value: torch.Tensor | None,
        video_sigma: torch.Tensor,
        noisy_actions: torch.Tensor,
        action_sigma: torch.Tensor,
    ) -> Prediction:
        """One joint pass over context and future (training, and sampling without the cache).

        Args:
            obs_latents: (B, C, k+1, H, W) clean latents of the history and current frames.
            past_actions: (B, n_past, A) clean normalised past actions.
            text: (B, Lt, text_dim) instruction embeddings.
            noisy_rgb, noisy_value: (B, C, h, H, W) noisy future latents (value None in no_value mode).
            video_sigma: (B,) their shared noise level in [0, 1].
            noisy_actions: (B, chunk, A) noisy future actions; action_sigma: (B,) their noise level.
        Returns:
            the predicted velocities of the future streams.
        """
        hiddens, tokens, skip = self._joint_pass(
            obs_latents, past_actions, text, noisy_rgb, noisy_value, video_sigma, noisy_actions, action_sigma
        )
        return self._outputs(hiddens, tokens, skip, self._grid(obs_latents), noisy_rgb.shape[2])

    def _joint_pass(
        self,
        obs_latents,
        past_actions,
        text,
        noisy_rgb,
        noisy_value,
        video_sigma,
        noisy_actions,
        action_sigma,
    ):
        """Final hidden states of every token (context included), the tokens, and the context length per stream."""
        ctx = self._context_tokens(obs_latents, past_actions)
        grid, frames = self._grid(obs_latents), obs_latents.shape[2]
        fut = self._future_tokens(
            frames, grid, noisy_rgb, noisy_value, video_sigma, noisy_actions, action_sigma
        )
        tokens = {"rgb": _cat_tokens(ctx["rgb"], fut["rgb"])}
        if "value" in fut:
            tokens["value"] = fut["value"]
        tokens["action"] = _cat_tokens(ctx["action"], fut["action"])
        layout = TokenLayout.cat([t.layout for t in tokens.values()])
        mask = self._mask(("full", len(layout), len(ctx["rgb"].layout)), layout, layout, obs_latents.device)
        hiddens, _, _ = self._run_layers(tokens, mask, self._text_kv(text))
        skip = {"rgb": ctx["rgb"].hidden.shape[1], "action": ctx["action"].hidden.shape[1]}
        return hiddens, tokens, skip

    def encode_context(
        self, obs_latents: torch.Tensor, past_actions: torch.Tensor, text: torch.Tensor
    ) -> ContextCache:
        """Run the context alone (it reads nothing else) and keep each layer's keys and values."""
        tokens = self._context_tokens(obs_latents, past_actions)
        layout = TokenLayout.cat([t.layout for t in tokens.values()])
        mask = self._mask(
            ("context", len(layout), len(tokens["rgb"].layout)), layout, layout, obs_latents.device
        )
        text_kv = self._text_kv(text)
        _, keys, values = self._run_layers(tokens, mask, text_kv)
        return ContextCache(keys, values, layout, text_kv, obs_latents.shape[2], self._grid(obs_latents))

    def denoise(
        self, cache: ContextCache, noisy_rgb, noisy_value, video_sigma, noisy_actions, action_sigma
    ) -> Prediction:
        """Velocities of the future streams, reading the context from ``cache`` (same as :meth:`forward`)."""
        tokens = self._future_tokens(
            cache.num_obs_frames,
            cache.grid_hw,
            noisy_rgb,
            noisy_value,
            video_sigma,
            noisy_actions,
            action_sigma,
        )
        q_layout = TokenLayout.cat([t.layout for t in tokens.values()])
        k_layout = TokenLayout.cat([cache.layout, q_layout])
        mask = self._mask(("future", len(q_layout), len(cache.layout)), q_layout, k_layout, noisy_rgb.device)
        hiddens, _, _ = self._run_layers(tokens, mask, cache.text_kv, cache)
        return self._outputs(hiddens, tokens, {}, cache.grid_hw, noisy_rgb.shape[2])

    @torch.no_grad()
    def sample(
        self,
        obs_latents: torch.Tensor,
        past_actions: torch.Tensor,
        text: torch.Tensor,
        noise: Prediction,
        num_steps: int,
        video_shift: float,
        action_shift: float,
        use_cache: bool = True,
    ) -> Prediction:
        """Denoise x, m and a together from Gaussian ``noise`` (paper Sec. 4.4, steps 3-6).

        x and m follow one schedule, a another; both take ``num_steps`` Euler steps.
        """
        video_sigmas = inference_sigmas(num_steps, video_shift)
        action_sigmas = inference_sigmas(num_steps, action_shift)
        batch = obs_latents.shape[0]
        cache = self.encode_context(obs_latents, past_actions, text) if use_cache else None
        x, m, a = noise.rgb, noise.value, noise.actions
        for i in range(num_steps):
            sv, sa = video_sigmas[i].item(), action_sigmas[i].item()
            sv_b = torch.full((batch,), sv, device=x.device)
            sa_b = torch.full((batch,), sa, device=x.device)
            if cache is not None:
                v = self.denoise(cache, x, m, sv_b, a, sa_b)
            else:
                v = self(obs_latents, past_actions, text, x, m, sv_b, a, sa_b)
            x = euler_step(x, v.rgb, sv, video_sigmas[i + 1].item())
            if m is not None:
                m = euler_step(m, v.value, sv, video_sigmas[i + 1].item())
            a = euler_step(a, v.actions, sa, action_sigmas[i + 1].item())
        return Prediction(x, m, a)

    def set_dtype(self, dtype: torch.dtype) -> AIMTransformer:
        """Cast weights to ``dtype`` but keep norms, modulation tables and time MLPs in fp32 (as Wan)."""
        self.to(dtype)
        for name, module in self.named_modules():
            if any(part in FP32_MODULES for part in name.split(".")):
                module.float()
        for name, param in self.named_parameters():
            if name.rsplit(".", 1)[-1] == "scale_shift_table":
                param.data = param.data.float()
        return self


def _cat_tokens(a: StreamTokens, b: StreamTokens) -> StreamTokens:
    return StreamTokens(
        torch.cat([a.hidden, b.hidden], 1),
        torch.cat([a.temb, b.temb], 1),
        torch.cat([a.timestep_proj, b.timestep_proj], 1),
        TokenLayout.cat([a.layout, b.layout]),
    )


_COMPILED_FLEX = None


def _flex_attention(device: torch.device):
    """FlexAttention, compiled on GPUs (where it is fast), eager elsewhere (tests, CPU)."""
    global _COMPILED_FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX
