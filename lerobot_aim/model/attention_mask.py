"""Intent-causal attention: who may read whom (paper Sec. 4.3.3, DESIGN.md).

Every token belongs to one group. The table below is the whole rule; the dense SDPA mask and the
FlexAttention block mask are both built from :func:`may_attend`, so they cannot disagree.

| queries \\ keys | current obs | past obs | past actions | state  | future RGB x | future value m | actions a |
|----------------|-------------|----------|--------------|--------|--------------|----------------|-----------|
| context        | causal      | causal   | causal       | causal | no           | no             | no        |
| x              | yes         | yes      | yes          | yes    | yes          | no             | no        |
| m              | yes         | yes      | no           | yes    | yes          | yes            | no        |
| a              | yes         | no       | yes          | yes    | no (wam: yes)| yes            | yes       |

V_x = [z_t^o, z_{t-k:t-1}^o, z_{t-k:t-1}^a, z^l, z^x]; V_m = [z_t^o, z_{t-k:t-1}^o, z^x, z^m];
V_a = [z_t^o, z_{t-k:t-1}^a, z^m, z^a]. Language reaches x through cross-attention, not this mask.
The robot state (``use_state``; not in the paper) is current information, read by every stream.
The value-noise tokens n^m belong to the value group m.
"causal": a context token reads context tokens whose time is not later than its own. The context
never reads the future, which is what makes its keys and values cacheable within a chunk.

``context_attention="per_instant"`` (not in the paper) replaces the context rows: a context token
reads only the tokens of its own instant and kind ("same": equal time), so its keys and values do
not depend on the rest of the window and can be kept across control steps
(:mod:`lerobot_aim.model.context_cache`). The future rows are unchanged.

| queries \\ keys | current obs | past obs | past actions | state  | future (x, m, a) |
|----------------|-------------|----------|--------------|--------|------------------|
| obs frames     | same        | same     | no           | no     | no               |
| past actions   | no          | no       | same         | no     | no               |
| state          | no          | no       | no           | same   | no               |
"""

from __future__ import annotations

from enum import IntEnum

import torch


class Group(IntEnum):
    CURRENT_OBS = 0
    PAST_OBS = 1
    PAST_ACTIONS = 2
    STATE = 3
    FUTURE_RGB = 4
    FUTURE_VALUE = 5
    FUTURE_ACTIONS = 6


CONTEXT_GROUPS = (Group.CURRENT_OBS, Group.PAST_OBS, Group.PAST_ACTIONS, Group.STATE)

_N, _Y, _C, _S = 0, 1, 2, 3  # never, always, causal in time, same instant
_RULE = {  # query group -> what it reads, in key-group order (cur, past, past_act, state, x, m, a)
    Group.CURRENT_OBS: (_C, _C, _C, _C, _N, _N, _N),
    Group.PAST_OBS: (_C, _C, _C, _C, _N, _N, _N),
    Group.PAST_ACTIONS: (_C, _C, _C, _C, _N, _N, _N),
    Group.STATE: (_C, _C, _C, _C, _N, _N, _N),
    Group.FUTURE_RGB: (_Y, _Y, _Y, _Y, _Y, _N, _N),
    Group.FUTURE_VALUE: (_Y, _Y, _N, _Y, _Y, _Y, _N),
    Group.FUTURE_ACTIONS: (_Y, _N, _Y, _Y, _N, _Y, _Y),
}
_PER_INSTANT_CONTEXT = {  # context rows of context_attention="per_instant" (context keys only)
    Group.CURRENT_OBS: (_S, _S, _N, _N),
    Group.PAST_OBS: (_S, _S, _N, _N),
    Group.PAST_ACTIONS: (_N, _N, _S, _N),
    Group.STATE: (_N, _N, _N, _S),
}
CONTEXT_ATTENTIONS = ("causal", "per_instant")


def rule_table(attention_mode: str, context_attention: str = "causal") -> torch.Tensor:
    """(7, 7) int table of the rule (0 never, 1 always, 2 causal, 3 same instant) for an
    ``attention_mode`` and a ``context_attention``.

    ``wam`` and ``no_value`` let actions read future RGB, as a typical unified world-action model
    does (``no_value`` has no value tokens at all). ``per_instant`` replaces the context rows.
    """
    table = torch.tensor([_RULE[g] for g in Group], dtype=torch.int8)
    if attention_mode in ("wam", "no_value"):
        table[Group.FUTURE_ACTIONS, Group.FUTURE_RGB] = _Y
    elif attention_mode != "intent_causal":
        raise ValueError(f"Unknown attention_mode {attention_mode!r}: use intent_causal, wam or no_value.")
    if context_attention == "per_instant":
        for group, row in _PER_INSTANT_CONTEXT.items():
            table[group, : len(row)] = torch.tensor(row, dtype=torch.int8)
    elif context_attention != "causal":
        raise ValueError(f"Unknown context_attention {context_attention!r}: use {' or '.join(CONTEXT_ATTENTIONS)}.")
    return table


def may_attend(
    table: torch.Tensor,
    q_group: torch.Tensor,
    k_group: torch.Tensor,
    q_time: torch.Tensor,
    k_time: torch.Tensor,
) -> torch.Tensor:
    """Whether a query may read a key; broadcasts over any shapes (also inside FlexAttention)."""
    rule = table[q_group, k_group]
    return (rule == _Y) | ((rule == _C) & (k_time <= q_time)) | ((rule == _S) & (k_time == q_time))


def dense_mask(table: torch.Tensor, q_groups, k_groups, q_times, k_times) -> torch.Tensor:
    """(Lq, Lk) boolean mask for ``scaled_dot_product_attention`` (True = may read)."""
    return may_attend(
        table.to(q_groups.device), q_groups[:, None], k_groups[None, :], q_times[:, None], k_times[None, :]
    )


def flex_block_mask(table: torch.Tensor, q_groups, k_groups, q_times, k_times):
    """FlexAttention ``BlockMask`` of the same rule (for GPUs; also runs on CPU)."""
    from torch.nn.attention.flex_attention import create_block_mask

    table = table.to(q_groups.device)

    def mask_mod(b, h, q_idx, kv_idx):
        return may_attend(table, q_groups[q_idx], k_groups[kv_idx], q_times[q_idx], k_times[kv_idx])

    return create_block_mask(
        mask_mod, B=None, H=None, Q_LEN=len(q_groups), KV_LEN=len(k_groups), device=q_groups.device
    )
