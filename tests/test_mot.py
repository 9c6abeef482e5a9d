"""AIMTransformer: shapes, the context cache, Wan initialisation, weight sharing, checkpointing."""

import pytest
import torch
from diffusers import WanTransformer3DModel

from lerobot_aim.model import AIMTransformer, ChunkSchedule, WanRGBStream, sample_chunk
from tests.test_attention_rule import A, C, S, _inputs, context_of, noisy_of, run


@pytest.mark.parametrize("video_steps", [4, 2])
def test_cached_and_uncached_sampling_agree(tiny_config, video_steps):
    model = AIMTransformer(tiny_config, action_dim=A, latent_channels=C).eval()
    inputs = _inputs(tiny_config)
    schedule = ChunkSchedule(video_steps=video_steps, action_steps=4, video_shift=3.0, action_shift=1.0)
    cached, _ = sample_chunk(model, context_of(inputs), noisy_of(inputs), schedule, use_cache=True)
    plain, _ = sample_chunk(model, context_of(inputs), noisy_of(inputs), schedule, use_cache=False)
    for field in ("rgb", "value", "actions"):
        torch.testing.assert_close(getattr(cached, field), getattr(plain, field), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_state", [False, True])
def test_denoise_with_cache_equals_joint_pass(tiny_config, use_state):
    tiny_config.use_state = use_state
    model = AIMTransformer(
        tiny_config, action_dim=A, latent_channels=C, state_dim=S if use_state else 0
    ).eval()
    inputs = _inputs(tiny_config)
    with torch.no_grad():
        joint = run(model, inputs)
        cache = model.encode_context(context_of(inputs))
        step = model.denoise(cache, noisy_of(inputs), inputs["video_sigma"], inputs["action_sigma"])
    for field in ("rgb", "value", "actions"):
        torch.testing.assert_close(getattr(step, field), getattr(joint, field), rtol=1e-5, atol=1e-5)


def test_value_stream_starts_as_a_copy_of_wan(tiny_config):
    cfg = tiny_config
    wan = WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        in_channels=C,
        out_channels=C,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
    )
    model = AIMTransformer(cfg, A, C, rgb=WanRGBStream.from_diffusers(wan))
    torch.testing.assert_close(model.rgb.blocks[1].ffn.net[2].weight, wan.blocks[1].ffn.net[2].weight)
    torch.testing.assert_close(model.value.blocks[1].attn1.to_q.weight, wan.blocks[1].attn1.to_q.weight)
    torch.testing.assert_close(model.value.proj_out.weight, wan.proj_out.weight)
    assert model.value.blocks[0].attn2 is None  # language reaches the RGB stream only


def test_shared_value_weights_save_parameters(tiny_config):
    own = AIMTransformer(tiny_config, A, C)
    tiny_config.share_value_weights = True
    shared = AIMTransformer(tiny_config, A, C)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(shared) < count(own)
    with torch.no_grad():
        out = run(shared, _inputs(tiny_config))
    assert out.value.shape == _inputs(tiny_config)["noisy_value"].shape


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    inputs = _inputs(tiny_config)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        tiny_config.gradient_checkpointing = flag
        model = AIMTransformer(tiny_config, A, C)
        out = run(model, inputs)
        (out.rgb.square().mean() + out.value.square().mean() + out.actions.square().mean()).backward()
        grads.append(model.action.blocks[0].attn1.to_q.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_keeps_norms_and_modulation_in_fp32(tiny_config):
    model = AIMTransformer(tiny_config, A, C).set_dtype(torch.bfloat16)
    assert model.rgb.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.rgb.blocks[0].scale_shift_table.dtype == torch.float32
    assert model.rgb.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    inputs = {
        k: (v.bfloat16() if torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in _inputs(tiny_config).items()
    }
    with torch.no_grad():
        out = run(model, inputs)
    assert torch.isfinite(out.actions.float()).all()
