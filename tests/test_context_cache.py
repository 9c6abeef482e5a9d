"""The context's keys and values kept across control steps: the per-instant rule does what it says,
and the store gives what encoding each window from scratch gives, while running only what is new."""

import pytest
import torch

from lerobot_aim import load_preset
from lerobot_aim.configuration_aim import AIMConfigError
from lerobot_aim.history import ContextHistory
from lerobot_aim.model import AIMTransformer, Context, ContextKVStore, Group, rule_table
from lerobot_aim.modeling_aim import AIMPolicy
from lerobot_aim.processor_aim import OBS_RGB_CANVAS
from tests.conftest import with_one_camera

A, S, C = 3, 5, 48  # action dim, state dim, pixel-codec latent channels (3 * 4 * 4)
GRID = (4, 4)


def _config(context_attention="per_instant", **overrides):
    return load_preset(
        "aim_tiny",
        num_layers=2,
        history_frames=4,
        context_attention=context_attention,
        use_state=True,
        device="cpu",
        **overrides,
    )


def _model(context_attention="per_instant") -> AIMTransformer:
    model = AIMTransformer(_config(context_attention), action_dim=A, latent_channels=C, state_dim=S)
    return model.double().eval()


# In float64 the one rounding left is the rotary table's (float32 cos and sin, as in every pass): a
# token kept from an earlier window ran at another absolute position, which rotary attention makes
# the same relative geometry up to that rounding (~1e-7; a wrong reuse differs by O(1)). The first
# window, run whole, matches to the bit.
ROTARY_ROUNDING = 1e-6


class Episode:
    """Latent frames, actions and states of every env step of one random episode, and the context a
    policy at step t plans from (as :class:`ContextHistory` lays it out)."""

    def __init__(self, config, steps: int, batch: int = 2, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.frames = torch.randn(steps, batch, C, *GRID, generator=g, dtype=torch.float64)
        self.actions = torch.randn(steps, batch, A, generator=g, dtype=torch.float64)
        self.states = torch.randn(steps, batch, S, generator=g, dtype=torch.float64)
        self.text = torch.randn(batch, config.text_max_length, config.text_dim, generator=g, dtype=torch.float64)
        self.history = ContextHistory(config.num_past_actions, config.frame_stride, A)

    def window(self, t: int) -> tuple[Context, list[int], list[int]]:
        frame_steps, action_steps = self.history.window_steps(t)
        obs = torch.stack([self.frames[max(s, 0)] for s in frame_steps], dim=2)
        past = torch.stack([self.actions[s] if s >= 0 else torch.zeros_like(self.actions[0]) for s in action_steps], 1)
        return Context(obs, past, self.text, self.states[t]), frame_steps, action_steps


def test_per_instant_rule_table():
    """The context rows of the second table in attention_mask.py, written out (3 = same instant)."""
    table = rule_table("intent_causal", "per_instant")
    context_rows = table[: Group.STATE + 1, : Group.STATE + 1].tolist()
    assert context_rows == [[3, 3, 0, 0], [3, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 3]]
    assert torch.equal(table[Group.STATE + 1 :], rule_table("intent_causal")[Group.STATE + 1 :])  # future rows
    assert not table[: Group.STATE + 1, Group.STATE + 1 :].any()  # the context never reads the future
    with pytest.raises(ValueError, match="per_instant"):
        rule_table("intent_causal", "sliding")


def _keys(model, context) -> torch.Tensor:
    """(L, B, tokens, heads, head_dim) keys of the encoded context, in every layer."""
    return torch.stack(model.encode_context(context).keys)


@pytest.mark.parametrize("context_attention", ["per_instant", "causal"])
def test_changing_the_oldest_frame_changes_only_its_own_tokens(context_attention):
    """What makes reuse exact, shown on the outputs: a different oldest frame leaves every other
    context token's keys untouched under per_instant; under the paper's causal context (the negative
    control) the later frames read it, so a window slide changes the keys of the frames that stay."""
    model = _model(context_attention)
    episode = Episode(model.config, steps=40)
    context, _, _ = episode.window(32)
    other = Context(context.obs_latents.clone(), context.past_actions, context.text, context.state)
    other.obs_latents[:, :, 0] += 1.0
    before, after = _keys(model, context), _keys(model, other)
    per_frame = GRID[0] // 2 * GRID[1] // 2
    changed = (before - after).abs().amax(dim=(0, 1, 3, 4)) > 1e-9  # per token
    assert changed[:per_frame].all()  # the frame itself
    if context_attention == "per_instant":
        assert not changed[per_frame:].any()
    else:
        assert changed[per_frame : 5 * per_frame].all()  # every later frame reads it


def test_store_equals_the_context_encoded_from_scratch_over_sliding_windows():
    """Four windows of a history-4 context, each planned 8 steps after the last (the preset's
    n_action_steps): the store's keys and values are those of encoding the window alone, and after
    the first window only the new frames (2 of 5), actions (8 of 16) and the state are run."""
    model = _model()
    cfg = model.config
    episode = Episode(cfg, steps=64)
    store = ContextKVStore()
    for i, t in enumerate(range(20, 52, cfg.n_action_steps)):
        context, frame_steps, action_steps = episode.window(t)
        computed = store.computed
        cached, fresh = store.encode(model, context, frame_steps, action_steps), model.encode_context(context)
        for got, want in zip(cached.keys + cached.values, fresh.keys + fresh.values, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0 if i == 0 else ROTARY_ROUNDING)
        assert cached.layout.groups.tolist() == fresh.layout.groups.tolist()
        assert torch.equal(cached.layout.positions, fresh.layout.positions)
        new = store.computed - computed
        assert new == (5 + 16 + 1 if i == 0 else 2 + 8 + 1)


def test_a_changed_input_is_run_again_not_read_stale():
    """The store reuses an instant only if its input is the same: a frame the history replaced, or
    another instruction, is recomputed, and the result is still the window encoded from scratch."""
    model = _model()
    episode = Episode(model.config, steps=40)
    store = ContextKVStore()
    context, frame_steps, action_steps = episode.window(24)
    store.encode(model, context, frame_steps, action_steps)
    episode.frames[16] += 0.5  # the frame of step 16 was replaced (a client re-sent it)
    context, frame_steps, action_steps = episode.window(32)
    computed = store.computed
    cached = store.encode(model, context, frame_steps, action_steps)
    assert store.computed - computed == 3 + 8 + 1  # steps 16 (replaced), 28 and 32; 8 actions; state
    torch.testing.assert_close(torch.stack(cached.keys), _keys(model, context), rtol=0, atol=ROTARY_ROUNDING)
    episode.text = episode.text + 1.0
    context, frame_steps, action_steps = episode.window(32)
    computed = store.computed
    cached = store.encode(model, context, frame_steps, action_steps)
    assert store.computed - computed == 5 + 16 + 1  # another instruction: every frame reads it
    torch.testing.assert_close(torch.stack(cached.keys), _keys(model, context), rtol=0, atol=ROTARY_ROUNDING)


def _act(policy, steps: int, seed: int) -> torch.Tensor:
    """(steps, B, A) actions of select_action over one episode of random frames, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(steps, 2, 3, 32, 32, generator=g) * 2 - 1
    states = torch.randn(steps, 2, S, generator=g)
    policy.reset()
    torch.manual_seed(seed)
    actions = [
        policy.select_action({OBS_RGB_CANVAS: frames[t], "observation.state": states[t], "task": ["go", "go"]})
        for t in range(steps)
    ]
    return torch.stack(actions)


def test_acting_with_the_store_gives_the_actions_of_acting_without_any_cache():
    """What the robot gets: select_action over 40 steps (5 chunks) with the cross-step store, and with
    no cache at all (every denoising step one joint pass over context and future), from the same
    noise, give the same actions; the store reused frames and actions."""
    from lerobot.configs import FeatureType, PolicyFeature

    config = with_one_camera(_config(), size=32, action_dim=A)
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (S,))
    policy = AIMPolicy(config).eval()
    cached = _act(policy, 40, seed=3)
    assert policy.context_store.reused > 0
    reused = policy.context_store.reused
    policy.config.use_context_cache = False
    uncached = _act(policy, 40, seed=3)
    assert policy.context_store.reused == 0 and reused == 4 * (3 + 8)
    torch.testing.assert_close(cached, uncached, rtol=1e-4, atol=1e-5)


def test_per_instant_with_the_wan_vae_is_refused_with_a_way_out():
    with pytest.raises(AIMConfigError, match="context_attention=causal"):
        load_preset("aim_wan22_5b", context_attention="per_instant")
