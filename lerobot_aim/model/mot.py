"""AIMTransformer: the three-stream Mixture-of-Transformers with intent-causal attention.

Per layer, every stream computes queries, keys and values of its own tokens with its own weights
(paper Sec. 4.3.2, Q_s = h_s W_Q,s); all tokens meet in one masked attention (Sec. 4.3.3,
h~_s = Attn(Q_s, K(V_s), V(V_s))); each stream then applies its own output projection,
feed-forward and (RGB only) cross-attention to language.

Streams and their tokens:
- RGB ``x`` (:class:`WanRGBStream`): the clean context frames (noise level 0, as Wan2.2 TI2V treats
  its conditioning frame) and the noisy future frames.
- value ``m`` (:class:`ValueStream`): the noisy future value maps, at the same noise level as x,
  and the learned value-noise tokens n^m (``value_noise``: the value stream's blocks, not decoded).
- action ``a`` (:class:`ActionStream`): the clean context tokens (past actions, and the robot
  state with ``use_state``) and the noisy future actions. With ``context_action_stream`` (Stage II)
  the context tokens go through a frozen copy of the action stream, ``context_action``.

Nothing reads later groups than the rule allows (:mod:`lerobot_aim.model.attention_mask`): the
context reads only itself, x and m never read the future actions. So one forward can be run as
three passes, each reading the keys and values of the passes before it:
:meth:`AIMTransformer.encode_context` (the context, once per chunk), :meth:`denoise_video` (x and m)
and :meth:`denoise_actions` (a). :meth:`forward` runs all tokens in one pass (training); both ways
compute the same velocities.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lerobot_aim.model.action_stream import ActionStream
from lerobot_aim.model.attention_mask import Group, dense_mask, flex_block_mask, rule_table
from lerobot_aim.model.flow_matching import NUM_TRAIN_TIMESTEPS
from lerobot_aim.model.layout import (
    TokenLayout,
    action_layout,
    frame_layout,
    instant_layout,
    observation_layout,
)
from lerobot_aim.model.rope import apply_rope, rope_cos_sin
from lerobot_aim.model.stream_block import project_out
from lerobot_aim.model.value_stream import ValueStream
from lerobot_aim.model.wan_stream import WanRGBStream, patchify, unpatchify

FP32_MODULES = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_out")


@dataclass
class Context:
    """What AIM plans from (clean, in the model's dtype).

    obs_latents: (B, C, k+1, H, W) codec latents of the history frames and the current frame.
    past_actions: (B, n_past, A) normalised actions executed between the first history frame and now.
    text: (B, Lt, text_dim) instruction embeddings of the frozen text encoder.
    state: (B, S) normalised robot state, or None (read only with ``use_state``).
    """

    obs_latents: torch.Tensor
    past_actions: torch.Tensor
    text: torch.Tensor
    state: torch.Tensor | None = None


@dataclass
class Prediction:
    """Noisy inputs, velocities (training) or clean samples (sampling) of the future streams.

    rgb, value: (B, C, h, H, W) latents (value is None without a value stream); actions (B, chunk, A)
    (None where a pass does not compute them).
    """

    rgb: torch.Tensor
    value: torch.Tensor | None
    actions: torch.Tensor | None


@dataclass
class StreamTokens:
    """One stream's tokens in one pass: hidden (B, L, dim), time embedding (B, L, dim) and its
    per-token projection (B, L, 6, dim), and where they sit (:class:`TokenLayout`, kept on the CPU:
    masks and rotations are built from it once per layout and memoised)."""

    hidden: torch.Tensor
    temb: torch.Tensor
    timestep_proj: torch.Tensor
    layout: TokenLayout

    def select(self, index: torch.Tensor) -> StreamTokens:
        """The tokens at ``index`` (a (n,) long tensor on the CPU), in that order."""
        on_device = index.to(self.hidden.device)
        return StreamTokens(
            self.hidden[:, on_device], self.temb[:, on_device], self.timestep_proj[:, on_device], self.layout.select(index)
        )


@dataclass
class KVCache:
    """Keys and values (B, L, heads, head_dim) of tokens already run, in every layer, with their
    layout; every layer's keys and values (B, Lt, heads, head_dim) of the instruction, which the
    RGB stream cross-attends to; and the context's frame count and latent grid."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    layout: TokenLayout
    text_kv: list[tuple[torch.Tensor, torch.Tensor]]
    num_obs_frames: int
    grid_hw: tuple[int, int]

    def extend(self, keys: list[torch.Tensor], values: list[torch.Tensor], layout: TokenLayout) -> KVCache:
        """This cache followed by more tokens' keys and values (e.g. the future video's)."""
        return replace(
            self,
            keys=[torch.cat(pair, 1) for pair in zip(self.keys, keys, strict=True)],
            values=[torch.cat(pair, 1) for pair in zip(self.values, values, strict=True)],
            layout=TokenLayout.cat([self.layout, layout]),
        )


class AIMTransformer(nn.Module):
    def __init__(
        self,
        config,
        action_dim: int,
        latent_channels: int,
        rgb: WanRGBStream | None = None,
        state_dim: int = 0,
    ):
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
                dim=config.hidden_size,
                num_heads=heads,
                head_dim=head_dim,
                ffn_dim=config.ffn_dim,
                num_layers=config.num_layers,
                latent_channels=latent_channels,
                patch_size=config.patch_size,
                freq_dim=config.freq_dim,
                num_noise_tokens=config.num_value_noise_tokens,
                shared_blocks=config.share_value_weights,
            )
            self.value.copy_from_rgb(self.rgb)
        self.action = ActionStream(
            action_dim=action_dim,
            dim=config.action_width,
            num_heads=heads,
            head_dim=head_dim,
            ffn_dim=config.action_ffn_dim,
            num_layers=config.num_layers,
            freq_dim=config.freq_dim,
            state_dim=state_dim,
        )
        self.context_action = copy.deepcopy(self.action) if config.context_action_stream else None
        if self.context_action is not None:
            self.context_action.requires_grad_(False)
        self.register_buffer(
            "rule", rule_table(config.attention_mode, config.context_attention), persistent=False
        )
        self._memo: dict = {}

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

    def split_context_action_stream(self) -> None:
        """Stage II: give the context's action-stream tokens (past actions, state) a frozen copy of the
        action stream. The RGB and value streams read those tokens; with the copy, training the action
        stream cannot change what they predict (paper Sec. 4.3.4: video and value heads frozen)."""
        if self.context_action is None:
            self.context_action = copy.deepcopy(self.action)
            self.config.context_action_stream = True
        self.context_action.requires_grad_(False)

    # ------------------------------------------------------------------------------------------
    # Token embedding
    def _video_tokens(self, stream, latents, sigma, layout) -> StreamTokens:
        """Frame tokens of a stream; ``sigma`` (B, L) per-token noise levels in [0, 1]."""
        return self._embedded_tokens(stream, patchify(latents, stream.patch_embedding), sigma, layout)

    @staticmethod
    def _embedded_tokens(stream, hidden, sigma, layout) -> StreamTokens:
        temb, proj = stream.condition_embedder(sigma * NUM_TRAIN_TIMESTEPS, hidden.dtype)
        return StreamTokens(hidden, temb, proj, layout)

    @staticmethod
    def _per_token(sigmas: list[tuple[torch.Tensor | float, int]], batch: int, device) -> torch.Tensor:
        """(B, L) noise levels from (sigma per sample or scalar, token count) segments."""
        parts = [
            torch.as_tensor(s, device=device, dtype=torch.float32).reshape(-1, 1).expand(batch, n)
            for s, n in sigmas
        ]
        return torch.cat(parts, dim=1)

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int]:
        _, ph, pw = self.config.patch_size
        return latents.shape[-2] // ph, latents.shape[-1] // pw

    @property
    def _context_action_stream(self) -> ActionStream:
        return self.context_action if self.context_action is not None else self.action

    def context_tokens(self, context: Context) -> dict[str, StreamTokens]:
        """The clean context: observation frames (RGB stream), past actions and state (action stream)."""
        obs, past_actions = context.obs_latents, context.past_actions
        batch, frames, device = obs.shape[0], obs.shape[2], obs.device
        obs_layout = observation_layout(frames, self.token_grid(obs))
        rgb = self._video_tokens(
            self.rgb, obs, self._per_token([(0.0, len(obs_layout))], batch, device), obs_layout
        )
        stream = self._context_action_stream
        num_past = past_actions.shape[1]
        layouts = [
            action_layout(
                Group.PAST_ACTIONS, -num_past, num_past, frames - 1, self.config.actions_per_latent_frame
            )
        ]
        hidden = [stream.action_encoder(past_actions.to(stream.action_encoder[0].weight.dtype))]
        if stream.state_encoder is not None:
            if context.state is None:
                raise ValueError(
                    "This AIM model reads the robot state (use_state=true), but the batch has no "
                    "`observation.state`."
                )
            state = context.state.to(stream.state_encoder[0].weight.dtype)
            hidden.append(stream.state_encoder(state)[:, None])
            layouts.append(instant_layout(Group.STATE, frames - 1, 1))
        layout = TokenLayout.cat(layouts)
        actions = self._embedded_tokens(
            stream, torch.cat(hidden, 1), self._per_token([(0.0, len(layout))], batch, device), layout
        )
        return {"rgb": rgb, "context_action": actions}

    def _future_video_tokens(self, num_obs_frames, grid, noisy_rgb, noisy_value, video_sigma):
        batch, horizon = noisy_rgb.shape[0], noisy_rgb.shape[2]
        rgb_layout = frame_layout(Group.FUTURE_RGB, num_obs_frames, horizon, grid)
        sigma = self._per_token([(video_sigma, len(rgb_layout))], batch, noisy_rgb.device)
        tokens = {"rgb": self._video_tokens(self.rgb, noisy_rgb, sigma, rgb_layout)}
        if self.value is not None:
            value_layout = frame_layout(Group.FUTURE_VALUE, num_obs_frames, horizon, grid)
            sigma = self._per_token([(video_sigma, len(value_layout))], batch, noisy_rgb.device)
            tokens["value"] = self._video_tokens(self.value, noisy_value, sigma, value_layout)
            noise_tokens = self.value.value_noise_tokens.repeat(batch, 1, 1)  # n^m, the same for every sample
            if noise_tokens.shape[1]:
                layout = instant_layout(Group.FUTURE_VALUE, num_obs_frames, noise_tokens.shape[1])
                sigma = self._per_token([(video_sigma, len(layout))], batch, noisy_rgb.device)
                tokens["value_noise"] = self._embedded_tokens(self.value, noise_tokens, sigma, layout)
        return tokens

    def _future_action_tokens(self, num_obs_frames, noisy_actions, action_sigma):
        batch, chunk = noisy_actions.shape[:2]
        layout = action_layout(
            Group.FUTURE_ACTIONS, 0, chunk, num_obs_frames - 1, self.config.actions_per_latent_frame
        )
        hidden = self.action.action_encoder(noisy_actions.to(self.action.action_encoder[0].weight.dtype))
        sigma = self._per_token([(action_sigma, chunk)], batch, noisy_actions.device)
        return {"action": self._embedded_tokens(self.action, hidden, sigma, layout)}

    # ------------------------------------------------------------------------------------------
    # Attention
    def _mask(self, q_layout: TokenLayout, k_layout: TokenLayout, device):
        """Dense bool mask (SDPA) or FlexAttention block mask, memoised per pair of token layouts."""
        backend = self.config.attention_backend
        if backend == "auto":
            backend = "flex" if device.type == "cuda" else "sdpa"
        key = (backend, str(device), *(_signature(lay) for lay in (q_layout, k_layout)))
        if key not in self._memo:
            build = flex_block_mask if backend == "flex" else dense_mask
            q, k = q_layout.to(device), k_layout.to(device)
            self._memo[key] = (backend, build(self.rule, q.groups, k.groups, q.times, k.times))
        return self._memo[key]

    def _rope(self, layout: TokenLayout, device):
        """Rotary cos and sin of a layout's positions, memoised like the masks."""
        key = ("rope", str(device), layout.positions.numpy().tobytes())
        if key not in self._memo:
            self._memo[key] = rope_cos_sin(layout.positions.to(device), self.config.attention_head_dim)
        return self._memo[key]

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
        if name == "context_action":
            return self._context_action_stream.blocks
        if name in ("value", "value_noise"):
            return self.value.blocks if self.value.blocks is not None else self.rgb.blocks
        return getattr(self, name).blocks

    def text_kv(self, text: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the keys and values of the instruction (B, Lt, text_dim) for the RGB stream."""
        text = self.rgb.condition_embedder.text_embedder(text)
        return [block.text_kv(text) for block in self.rgb.blocks]

    def _layer(self, index, hiddens, tokens, rope, mask, text_kv, past_kv, rotated_keys=True):
        """One MoT layer over the streams in ``tokens`` (in order); returns new hiddens and K/V (the
        keys after the rotary embedding, or before it with ``rotated_keys=False``)."""
        qs, ks, vs, mods = [], [], [], []
        for name, hidden in zip(tokens, hiddens, strict=True):
            block = self._blocks(name)[index]
            mod = block.modulation(tokens[name].timestep_proj)
            q, k, v = block.qkv(hidden, mod[0], mod[1])
            qs.append(q), ks.append(k), vs.append(v), mods.append(mod)
        q, k, v = torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(vs, 1)
        raw_k = k
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        kv = (k if rotated_keys else raw_k, v)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 1), torch.cat([past_kv[1], v], 1)
        out = self._attend(q, k, v, mask).split([h.shape[1] for h in hiddens], dim=1)
        new = []
        for name, hidden, attn, mod in zip(tokens, hiddens, out, mods, strict=True):
            block = self._blocks(name)[index]
            new.append(block.finish(hidden, attn, *mod[2:], text_kv=text_kv if name == "rgb" else None))
        return new, kv

    def _run(self, tokens: dict[str, StreamTokens], text_kv, cache: KVCache | None = None, rotated_keys=True):
        """All layers over ``tokens``, reading the keys and values in ``cache`` too.

        Returns the final hiddens per stream, and the per-layer keys and values of these tokens with
        their layout (to extend a cache with; keys before the rotary embedding with
        ``rotated_keys=False``)."""
        layout = TokenLayout.cat([t.layout for t in tokens.values()])
        first = next(iter(tokens.values())).hidden
        device = first.device
        mask = self._mask(layout, layout if cache is None else TokenLayout.cat([cache.layout, layout]), device)
        rope = self._rope(layout, device)
        hiddens = [t.hidden for t in tokens.values()]
        keys, values = [], []
        for i in range(self.config.num_layers):
            past_kv = None if cache is None else (cache.keys[i], cache.values[i])
            if self.config.gradient_checkpointing and torch.is_grad_enabled():
                hiddens, (k, v) = checkpoint(
                    self._layer, i, hiddens, tokens, rope, mask, text_kv[i], past_kv, rotated_keys,
                    use_reentrant=False,
                )
            else:
                hiddens, (k, v) = self._layer(i, hiddens, tokens, rope, mask, text_kv[i], past_kv, rotated_keys)
            keys.append(k), values.append(v)
        return dict(zip(tokens, hiddens, strict=True)), keys, values, layout

    # ------------------------------------------------------------------------------------------
    # Outputs
    def _video_out(self, name, hiddens, tokens, skip: int, grid, horizon) -> torch.Tensor | None:
        """(B, C, horizon, H, W) latents from a stream's hiddens, its first ``skip`` tokens (the context
        frames) dropped."""
        if name not in hiddens:
            return None
        hidden, temb = hiddens[name][:, skip:], tokens[name].temb[:, skip:]
        return unpatchify(project_out(getattr(self, name), hidden, temb), (horizon, *grid), self.config.patch_size)

    def _action_out(self, hiddens, tokens) -> torch.Tensor:
        return project_out(self.action, hiddens["action"], tokens["action"].temb)

    # ------------------------------------------------------------------------------------------
    # Passes
    def forward(
        self, context: Context, noisy: Prediction, video_sigma: torch.Tensor, action_sigma: torch.Tensor
    ) -> Prediction:
        """One joint pass over context and future (training): the predicted velocities.

        Args:
            context: the clean context (:class:`Context`).
            noisy: the noisy future: rgb, value (B, C, h, H, W) (value None in no_value mode) and
                actions (B, chunk, A).
            video_sigma: (B,) the noise level of x and m in [0, 1]; action_sigma: (B,) that of a.
        """
        hiddens, tokens, num_context_frames = self._joint_pass(context, noisy, video_sigma, action_sigma)
        grid, horizon = self.token_grid(context.obs_latents), noisy.rgb.shape[2]
        return Prediction(
            self._video_out("rgb", hiddens, tokens, num_context_frames, grid, horizon),
            self._video_out("value", hiddens, tokens, 0, grid, horizon),
            self._action_out(hiddens, tokens),
        )

    def _joint_pass(self, context: Context, noisy: Prediction, video_sigma, action_sigma):
        """Final hidden states of every token (context included), the tokens, and the number of
        context tokens of the RGB stream."""
        ctx = self.context_tokens(context)
        frames, grid = context.obs_latents.shape[2], self.token_grid(context.obs_latents)
        video = self._future_video_tokens(frames, grid, noisy.rgb, noisy.value, video_sigma)
        tokens = {"rgb": _cat_tokens(ctx["rgb"], video["rgb"])}
        tokens.update({name: video[name] for name in ("value", "value_noise") if name in video})
        tokens["context_action"] = ctx["context_action"]
        tokens.update(self._future_action_tokens(frames, noisy.actions, action_sigma))
        hiddens, _, _, _ = self._run(tokens, self.text_kv(context.text))
        return hiddens, tokens, ctx["rgb"].hidden.shape[1]

    def encode_context(self, context: Context) -> KVCache:
        """Run the context alone (it reads nothing else) and keep each layer's keys and values."""
        tokens = self.context_tokens(context)
        text_kv = self.text_kv(context.text)
        _, keys, values, layout = self._run(tokens, text_kv)
        return KVCache(
            keys, values, layout, text_kv, context.obs_latents.shape[2], self.token_grid(context.obs_latents)
        )

    def encode_context_tokens(
        self, tokens: dict[str, StreamTokens], text_kv
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer keys, before the rotary embedding, and values of some context tokens run alone.

        With ``context_attention="per_instant"`` a context token reads only its own instant, so any
        subset of whole instants gives the keys and values it has in the full context
        (:mod:`lerobot_aim.model.context_cache`); rotate them with :meth:`rotate_keys` at their
        positions in the window."""
        _, keys, values, _ = self._run(tokens, text_kv, rotated_keys=False)
        return keys, values

    def rotate_keys(self, keys: list[torch.Tensor], layout: TokenLayout) -> list[torch.Tensor]:
        """Keys (B, L, heads, head_dim) rotated at the positions of ``layout``, as every pass rotates them."""
        rope = self._rope(layout, keys[0].device)
        return [apply_rope(k, *rope) for k in keys]

    def denoise_video(
        self, cache: KVCache, rgb: torch.Tensor, value: torch.Tensor | None, video_sigma: torch.Tensor
    ) -> tuple[Prediction, KVCache]:
        """Velocities of x and m (their tokens read the context and each other, never the actions),
        and ``cache`` extended with their keys and values, for :meth:`denoise_actions` to read."""
        tokens = self._future_video_tokens(cache.num_obs_frames, cache.grid_hw, rgb, value, video_sigma)
        hiddens, keys, values, layout = self._run(tokens, cache.text_kv, cache)
        horizon = rgb.shape[2]
        velocity = Prediction(
            self._video_out("rgb", hiddens, tokens, 0, cache.grid_hw, horizon),
            self._video_out("value", hiddens, tokens, 0, cache.grid_hw, horizon),
            None,
        )
        return velocity, cache.extend(keys, values, layout)

    def denoise_actions(self, cache: KVCache, actions: torch.Tensor, action_sigma: torch.Tensor) -> torch.Tensor:
        """(B, chunk, A) velocity of the actions, reading a cache that holds the context and the
        future video (:meth:`denoise_video`)."""
        tokens = self._future_action_tokens(cache.num_obs_frames, actions, action_sigma)
        hiddens, _, _, _ = self._run(tokens, cache.text_kv, cache)
        return self._action_out(hiddens, tokens)

    def denoise(
        self, cache: KVCache, noisy: Prediction, video_sigma: torch.Tensor, action_sigma: torch.Tensor
    ) -> Prediction:
        """Velocities of all future streams from the context cache (the same as :meth:`forward`)."""
        video, with_video = self.denoise_video(cache, noisy.rgb, noisy.value, video_sigma)
        return replace(video, actions=self.denoise_actions(with_video, noisy.actions, action_sigma))

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


def _signature(layout: TokenLayout) -> tuple:
    """A hashable key of a layout's groups and times (what the attention mask depends on)."""
    return (len(layout), layout.groups.numpy().tobytes(), layout.times.numpy().tobytes())


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
