"""Imagined futures decoded as the causal Wan2.2 VAE decodes a real clip: after their context.

The truth is diffusers' own ``AutoencoderKLWan`` (Wan2.2 layout: temporal stride 4, the first latent
of a clip decoded as a single image): a clip of context frames then future frames is encoded and
decoded whole, and the future part of that decoding is what AIM's decoded imagined future must equal
when its "imagined" latents are the clip's own future latents.
"""

import pytest
import torch
from diffusers import AutoencoderKLWan
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_aim import load_preset
from lerobot_aim.model import Context, Prediction
from lerobot_aim.modeling_aim import AIMPolicy
from lerobot_aim.processor_aim import make_aim_pre_post_processors
from tests.test_codecs import TINY_WAN22_VAE

SIZE = 64  # the smallest head view the VAE (16x) and 2x2 patches with half-size wrists accept


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wan22_vae")
    AutoencoderKLWan(**TINY_WAN22_VAE).save_pretrained(path)
    return path


@pytest.fixture
def policy(vae_dir):
    config = load_preset(
        "aim_tiny",
        codec="wan_vae",
        codec_path=str(vae_dir),
        image_size=[SIZE, SIZE],
        frame_stride=1,
        num_layers=1,
        num_inference_steps=2,
        device="cpu",
    )
    config.cameras = ["head"]
    config.input_features = {
        "observation.images.head": PolicyFeature(FeatureType.VISUAL, (3, SIZE, SIZE)),
        "observation.value_maps.head": PolicyFeature(FeatureType.VISUAL, (3, SIZE, SIZE)),
    }
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (2,))}
    return AIMPolicy(config).eval()


def _clip(frames: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, frames, SIZE, SIZE) in [-1, 1]: a bright square moving across a gradient."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    video = (
        (xs / SIZE)[None, None].repeat(3, frames, 1, 1) * 0.6
        - 0.3
        + 0.05 * torch.randn(3, frames, SIZE, SIZE, generator=g)
    )
    for t in range(frames):
        x0 = 4 + 3 * t
        video[:, t, 20:36, x0 : x0 + 16] = 0.9
    return video.clamp(-1, 1)[None]


def test_imagined_future_decodes_as_the_vae_decodes_the_whole_clip(policy):
    codec = policy._frozen.codec
    cfg = policy.config
    context_frames = 1 + cfg.history_frames * 4
    clip = _clip(context_frames + cfg.chunk_size)
    with torch.no_grad():
        latents = codec.encode(clip)  # (1, 48, k+1+h, 4, 4), standardised as diffusers' pipelines do
        decoded = codec.vae.decode(latents * codec.latents_std + codec.latents_mean).sample
        truth = ((decoded + 1) / 2).clamp(0, 1)
    truth = truth[:, :, context_frames:].transpose(1, 2)  # (1, 8, 3, H, W): the future part
    context = Context(
        latents[:, :, : cfg.history_frames + 1],
        torch.zeros(1, cfg.num_past_actions, 2),
        torch.zeros(1, 1, 384),
    )
    future = latents[:, :, cfg.history_frames + 1 :]
    policy.remember(Prediction(future, future, torch.zeros(1, cfg.chunk_size, 2)), context)

    for decoded in (policy.decode_predicted_rgb(), policy.decode_value_maps()):
        assert decoded.shape == (1, cfg.chunk_size, 3, SIZE, SIZE)  # one frame per step of the chunk
        torch.testing.assert_close(decoded, truth, rtol=1e-4, atol=1e-4)
    # lerobot-eval concatenates the chunks' latents along time and decodes once.
    video = policy.decode_predicted_latents(torch.cat([policy.last_predicted_latents] * 2, dim=2))
    assert video.shape == (2 * cfg.chunk_size, SIZE, 2 * SIZE, 3)
    expected = (truth[0].permute(0, 2, 3, 1).numpy() * 255).round()
    assert abs(video[: cfg.chunk_size, :, :SIZE].astype(float) - expected).max() <= 1
    # The fault this replaces: the future latents decoded as a clip of their own give 5 frames, not
    # 8, and not the clip's frames.
    with torch.no_grad():
        alone = codec.decode(future)
    assert alone.shape[2] == 5


def test_value_maps_are_encoded_after_the_context_frames(policy):
    """Training encodes future value maps as the continuation of the context frames, so that the
    decoder's inverse (after the same context latents) gives the value maps back as well as the VAE
    reconstructs a whole clip."""
    cfg = policy.config
    context_frames = 1 + cfg.history_frames * 4
    frames = _clip(context_frames + cfg.chunk_size, seed=1)[0].transpose(0, 1)[None]  # (1, T, 3, H, W)
    maps = torch.zeros_like(frames) - 1
    maps[:, context_frames:, :, 8:24, 40:56] = 1.0  # a value-map blob in the future frames
    latents = policy._encode_value_maps(frames[:, :context_frames], maps[:, context_frames:])
    with torch.no_grad():
        whole = policy._frozen.codec.encode(
            torch.cat([frames[:, :context_frames], maps[:, context_frames:]], 1).transpose(1, 2)
        )
    torch.testing.assert_close(latents, whole[:, :, cfg.history_frames + 1 :])


def test_a_planned_chunk_decodes_to_one_frame_per_step(policy):
    pre, _ = make_aim_pre_post_processors(
        policy.config, {"action": {"mean": torch.zeros(2), "std": torch.ones(2)}}
    )
    batch = pre({"observation.images.head": (_clip(1)[0, :, 0][None] + 1) / 2, "task": ["push"]})
    policy.reset()
    policy.select_action(batch)
    cfg = policy.config
    assert policy.last_predicted_latents.shape[2] == cfg.history_frames + 1 + cfg.future_frames
    assert policy.decode_value_maps().shape[:2] == (1, cfg.chunk_size)
    assert policy.decode_predicted_rgb().shape[:2] == (1, cfg.chunk_size)
