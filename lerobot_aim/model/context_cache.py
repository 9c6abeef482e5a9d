"""The context's keys and values kept across control steps (paper Sec. 4.4, step 7).

Acting plans a chunk every ``n_action_steps`` env steps from a sliding window of frames and past
actions, and consecutive windows share most of it. With ``context_attention="per_instant"`` a
context token reads only the tokens of its own instant (:mod:`lerobot_aim.model.attention_mask`): a
frame its own patches, a past action or the state only itself. Its keys before the rotary embedding,
and its values, are then a function of that instant's input (and the instruction) alone; the rotary
embedding, applied at the token's position in the current window, says where it sits.
:class:`ContextKVStore` keeps them per instant (the frame or the action of one env step), runs only the
instants that are new, and assembles the window's :class:`KVCache`, which
:func:`~lerobot_aim.model.sampling.sample_chunk` reads instead of encoding the context again.

An instant is reused only if its input equals the stored one exactly, so a replaced frame, a new
episode or another instruction is recomputed, never read stale. Under the paper's ``causal`` context
a surviving frame reads the frames before it, which change as the window slides: nothing can be kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lerobot_aim.model.layout import TokenLayout
from lerobot_aim.model.mot import AIMTransformer, Context, KVCache


@dataclass
class _Instant:
    """One instant of the window: its key (kind, env step), its input, and where its tokens are among
    the context tokens of one stream ("rgb": frames; "context_action": past actions and state)."""

    key: tuple[str, int]
    value: Tensor  # (B, C, h, w) latent frame, (B, A) past action or (B, S) state
    stream: str
    index: Tensor  # (n,) long, CPU


@dataclass
class _Stored:
    value: Tensor
    keys: list[Tensor]  # per layer (B, n, heads, head_dim), before the rotary embedding
    values: list[Tensor]  # per layer (B, n, heads, head_dim)


class ContextKVStore:
    """Per-instant keys and values of the context of one episode (``reset`` at a new episode or after
    the weights change). ``computed`` and ``reused`` count the instants run and read back."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._stored: dict[tuple[str, int], _Stored] = {}
        self._text: Tensor | None = None
        self._text_kv: list[tuple[Tensor, Tensor]] | None = None
        self.computed = 0
        self.reused = 0

    def encode(
        self, model: AIMTransformer, context: Context, frame_steps: list[int], action_steps: list[int]
    ) -> KVCache:
        """The :class:`KVCache` of ``context`` (what :meth:`AIMTransformer.encode_context` returns),
        running only the instants not kept from earlier windows.

        ``frame_steps`` are the env steps of the context's frames (oldest first), ``action_steps`` those
        of its past actions; the state, if any, is that of the last frame's step."""
        if model.config.context_attention != "per_instant":
            raise ValueError(
                "Keys and values can be kept across control steps only with context_attention='per_instant' "
                f"(this model's context is {model.config.context_attention!r})."
            )
        tokens = model.context_tokens(context)
        instants = self._instants(context, tokens, frame_steps, action_steps)
        text_kv = self._text_kv_of(model, context.text)
        fresh = self._fresh(instants)
        if fresh:
            subset = {}
            for stream in ("rgb", "context_action"):
                index = [inst.index for inst in fresh if inst.stream == stream]
                if index:
                    subset[stream] = tokens[stream].select(torch.cat(index))
            keys, values = model.encode_context_tokens(subset, text_kv)
            # `fresh` is in window order, frames before actions: the order of the subset's tokens.
            sizes = [len(inst.index) for inst in fresh]
            parts = zip(*(k.split(sizes, 1) for k in keys), strict=True)
            value_parts = zip(*(v.split(sizes, 1) for v in values), strict=True)
            for inst, k, v in zip(fresh, parts, value_parts, strict=True):
                self._stored[inst.key] = _Stored(inst.value.clone(), list(k), list(v))
        self.computed += len(fresh)
        self.reused += len(instants) - len(fresh)
        self._stored = {inst.key: self._stored[inst.key] for inst in instants}  # forget what left the window
        stored = [self._stored[inst.key] for inst in instants]
        layout = TokenLayout.cat([tokens["rgb"].layout, tokens["context_action"].layout])
        keys = [torch.cat([s.keys[i] for s in stored], 1) for i in range(model.config.num_layers)]
        values = [torch.cat([s.values[i] for s in stored], 1) for i in range(model.config.num_layers)]
        obs = context.obs_latents
        return KVCache(
            model.rotate_keys(keys, layout), values, layout, text_kv, obs.shape[2], model.token_grid(obs)
        )

    @staticmethod
    def _instants(context: Context, tokens, frame_steps: list[int], action_steps: list[int]) -> list[_Instant]:
        obs, past = context.obs_latents, context.past_actions
        if len(frame_steps) != obs.shape[2] or len(action_steps) != past.shape[1]:
            raise ValueError(
                f"The context holds {obs.shape[2]} frames and {past.shape[1]} past actions, but steps were "
                f"given for {len(frame_steps)} frames and {len(action_steps)} actions."
            )
        per_frame = tokens["rgb"].hidden.shape[1] // obs.shape[2]
        instants = [
            _Instant(("frame", s), obs[:, :, f], "rgb", torch.arange(f * per_frame, (f + 1) * per_frame))
            for f, s in enumerate(frame_steps)
        ]
        instants += [
            _Instant(("action", s), past[:, j], "context_action", torch.tensor([j]))
            for j, s in enumerate(action_steps)
        ]
        if tokens["context_action"].hidden.shape[1] > past.shape[1]:  # the state token follows the actions
            instants.append(
                _Instant(("state", frame_steps[-1]), context.state, "context_action", torch.tensor([past.shape[1]]))
            )
        return instants

    def _fresh(self, instants: list[_Instant]) -> list[_Instant]:
        """The instants whose stored input is missing or differs (one device sync for all)."""
        kept = [
            (inst, self._stored[inst.key])
            for inst in instants
            if inst.key in self._stored and _same_kind(self._stored[inst.key].value, inst.value)
        ]
        equal = torch.stack([(s.value == inst.value).all() for inst, s in kept]).tolist() if kept else []
        reusable = {inst.key for (inst, _), same in zip(kept, equal, strict=True) if same}
        return [inst for inst in instants if inst.key not in reusable]

    def _text_kv_of(self, model: AIMTransformer, text: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The instruction's keys and values, kept while the instruction is the same. Frames read the
        instruction (cross-attention), so another one makes every kept instant stale."""
        if self._text is None or not (_same_kind(self._text, text) and torch.equal(self._text, text)):
            self._stored.clear()
            self._text, self._text_kv = text.clone(), model.text_kv(text)
        return self._text_kv


def _same_kind(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
