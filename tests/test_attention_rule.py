"""The intent-causal rule, tested on what it must do rather than how it is built."""

import pytest
import torch

from lerobot_aim.model import (
    AIMTransformer,
    Context,
    Group,
    Prediction,
    dense_mask,
    flex_block_mask,
    rule_table,
)
from lerobot_aim.model.layout import TokenLayout, action_layout, frame_layout, observation_layout

A = 4  # action dim
C = 48  # pixel-codec latent channels (3 * 4 * 4)
S = 5  # state dim


def _inputs(config, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = (8, 8)
    obs = torch.randn(batch, C, config.history_frames + 1, *grid, generator=g)
    past = torch.randn(batch, config.num_past_actions, A, generator=g)
    text = torch.randn(batch, config.text_max_length, config.text_dim, generator=g)
    x = torch.randn(batch, C, config.future_frames, *grid, generator=g)
    m = torch.randn(batch, C, config.future_frames, *grid, generator=g)
    a = torch.randn(batch, config.chunk_size, A, generator=g)
    return dict(
        obs_latents=obs,
        past_actions=past,
        text=text,
        state=torch.randn(batch, S, generator=g) if config.use_state else None,
        noisy_rgb=x,
        noisy_value=m,
        video_sigma=torch.tensor([0.3, 0.9]),
        noisy_actions=a,
        action_sigma=torch.tensor([0.5, 0.1]),
    )


def context_of(inputs) -> Context:
    return Context(inputs["obs_latents"], inputs["past_actions"], inputs["text"], inputs["state"])


def noisy_of(inputs) -> Prediction:
    return Prediction(inputs["noisy_rgb"], inputs["noisy_value"], inputs["noisy_actions"])


def run(model, inputs) -> Prediction:
    """The joint forward pass on the named inputs of :func:`_inputs`."""
    return model(context_of(inputs), noisy_of(inputs), inputs["video_sigma"], inputs["action_sigma"])


def _model(config, mode):
    config.attention_mode = mode
    config.num_layers = 1
    return AIMTransformer(config, action_dim=A, latent_channels=C, state_dim=S if config.use_state else 0).eval()


@pytest.mark.parametrize("mode", ["intent_causal", "wam"])
def test_actions_read_future_rgb_only_in_wam_mode(tiny_config, mode):
    model = _model(tiny_config, mode)
    inputs = _inputs(tiny_config)
    changed = dict(inputs, noisy_rgb=inputs["noisy_rgb"] + 1.0)
    with torch.no_grad():
        before, after = run(model, inputs), run(model, changed)
    if mode == "intent_causal":
        assert torch.equal(before.actions, after.actions)  # bit-identical
    else:
        assert not torch.allclose(before.actions, after.actions)
    assert not torch.allclose(before.value, after.value)  # m reads x in both modes


@pytest.mark.parametrize("use_state", [False, True])
def test_context_never_reads_the_future(tiny_config, use_state):
    tiny_config.use_state = use_state
    model = _model(tiny_config, "wam")
    inputs = _inputs(tiny_config)
    with torch.no_grad():
        hiddens, _, num_rgb_context = model._joint_pass(
            context_of(inputs), noisy_of(inputs), inputs["video_sigma"], inputs["action_sigma"]
        )
        for name, delta in [
            ("noisy_rgb", 1.0),
            ("noisy_value", 1.0),
            ("noisy_actions", 1.0),
            ("video_sigma", 0.05),
        ]:
            changed = dict(inputs, **{name: inputs[name] + delta})
            other, _, _ = model._joint_pass(
                context_of(changed), noisy_of(changed), changed["video_sigma"], changed["action_sigma"]
            )
            assert torch.equal(hiddens["rgb"][:, :num_rgb_context], other["rgb"][:, :num_rgb_context]), name
            assert torch.equal(hiddens["context_action"], other["context_action"]), name


def test_value_maps_do_not_read_past_actions_and_actions_not_past_frames(tiny_config):
    model = _model(tiny_config, "intent_causal")
    inputs = _inputs(tiny_config)
    with torch.no_grad():
        base = run(model, inputs)
        past_obs = inputs["obs_latents"].clone()
        past_obs[:, :, :-1] += 1.0  # history frames only, current frame untouched
        moved = run(model, dict(inputs, obs_latents=past_obs))
        assert torch.equal(base.actions, moved.actions)  # V_a has no past observations...
        assert not torch.equal(base.value, moved.value)  # ...V_m has them
        moved = run(model, dict(inputs, past_actions=inputs["past_actions"] + 1.0))
        assert not torch.equal(base.actions, moved.actions)
        # with one layer, m reads x but x's context reading of past actions lands only after the layer
        assert torch.equal(base.value, moved.value)


def test_rule_table_matches_design():
    t = rule_table("intent_causal")
    assert t[Group.FUTURE_ACTIONS, Group.FUTURE_RGB] == 0
    assert t[Group.FUTURE_ACTIONS, Group.FUTURE_VALUE] == 1
    assert t[Group.FUTURE_VALUE, Group.PAST_ACTIONS] == 0
    assert rule_table("wam")[Group.FUTURE_ACTIONS, Group.FUTURE_RGB] == 1
    with pytest.raises(ValueError, match="intent_causal"):
        rule_table("everything")


def test_dense_and_flex_masks_agree():
    layout = TokenLayout.cat(
        [
            observation_layout(2, (2, 4)),
            action_layout(Group.PAST_ACTIONS, -4, 4, 1, 4),
            frame_layout(Group.FUTURE_RGB, 2, 2, (2, 4)),
            frame_layout(Group.FUTURE_VALUE, 2, 2, (2, 4)),
            action_layout(Group.FUTURE_ACTIONS, 0, 8, 1, 4),
        ]
    )
    table = rule_table("intent_causal")
    args = (table, layout.groups, layout.groups, layout.times, layout.times)
    dense = dense_mask(*args)
    block = flex_block_mask(*args)
    flex_dense = block.to_dense()  # (1, 1, q_blocks, kv_blocks): check the exact mask via mask_mod
    assert flex_dense.shape[-1] >= 1
    q, k = torch.meshgrid(torch.arange(len(layout)), torch.arange(len(layout)), indexing="ij")
    from_mod = block.mask_mod(torch.zeros(()), torch.zeros(()), q, k)
    assert torch.equal(from_mod, dense)


def test_flex_and_sdpa_outputs_agree(tiny_config):
    inputs = _inputs(tiny_config)
    tiny_config.attention_backend = "sdpa"
    model = _model(tiny_config, "intent_causal")
    with torch.no_grad():
        sdpa = run(model, inputs)
        model.config.attention_backend = "flex"
        flex = run(model, inputs)
    for field in ("rgb", "value", "actions"):
        torch.testing.assert_close(getattr(flex, field), getattr(sdpa, field), rtol=1e-4, atol=1e-5)


def test_no_value_mode_has_no_value_stream(tiny_config):
    model = _model(tiny_config, "no_value")
    assert model.value is None
    inputs = dict(_inputs(tiny_config), noisy_value=None)
    with torch.no_grad():
        out = run(model, inputs)
    assert out.value is None and out.actions.shape == inputs["noisy_actions"].shape


def test_state_is_current_information_every_stream_reads(tiny_config):
    tiny_config.use_state = True
    model = _model(tiny_config, "intent_causal")
    inputs = _inputs(tiny_config)
    changed = dict(inputs, state=inputs["state"] + 1.0)
    with torch.no_grad():
        base, moved = run(model, inputs), run(model, changed)
        for field in ("rgb", "value", "actions"):
            assert not torch.allclose(getattr(base, field), getattr(moved, field)), field
        # causal in time: the history frame (time 0) does not read the current state (time k)
        hiddens, _, _ = model._joint_pass(context_of(inputs), noisy_of(inputs), inputs["video_sigma"], inputs["action_sigma"])
        other, _, _ = model._joint_pass(context_of(changed), noisy_of(changed), changed["video_sigma"], changed["action_sigma"])
    history_tokens = inputs["obs_latents"].shape[-2] * inputs["obs_latents"].shape[-1] // 4  # 2x2 patches
    assert torch.equal(hiddens["rgb"][:, :history_tokens], other["rgb"][:, :history_tokens])
    assert not torch.equal(hiddens["rgb"][:, history_tokens:], other["rgb"][:, history_tokens:])


def test_value_noise_tokens_are_not_a_bias_the_patch_embedding_absorbs(tiny_config):
    """An n^m added to every value token is undone exactly by moving the patch embedding's bias;
    tokens appended to the value stream are not: they change the actions whatever the bias does."""
    model = _model(tiny_config, "intent_causal")
    inputs = _inputs(tiny_config)
    delta = torch.randn_like(model.value.value_noise_tokens)
    with torch.no_grad():
        base = run(model, inputs)
        model.value.value_noise_tokens += delta
        moved = run(model, inputs)
        model.value.patch_embedding.bias -= delta.mean(dim=(0, 1))  # what would undo an added constant
        compensated = run(model, inputs)
    assert not torch.allclose(base.actions, moved.actions)
    assert not torch.allclose(base.actions, compensated.actions, atol=1e-4)
    assert moved.value.shape == inputs["noisy_value"].shape  # the noise tokens are not decoded
