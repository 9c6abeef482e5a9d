"""What a user of the tiny preset sees after a short training: imagined futures that move.

The data is built here with known answers: a square slides left or right at a constant speed (the
two context frames tell which way), its value map is a Gaussian on it. A tiny AIM trained briefly
through the policy's own loss must predict the future frames and value maps closer to the truth
than copying the current frame does, and the sampled future must not keep the sampler's initial
noise: the narrow tiny presets of before kept it in a third of every token (their stream was
narrower than the token), which showed as static in every imagined video.
"""

import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_aim import load_preset
from lerobot_aim.model import ChunkSchedule, Context, Prediction, sample_chunk
from lerobot_aim.modeling_aim import AIMPolicy
from lerobot_aim.processor_aim import OBS_RGB_CANVAS, make_aim_pre_post_processors

SIZE, SQUARE, SPEED = 32, 6, 1.0  # pixels, pixels, pixels per dataset step
IMAGES, MAPS = "observation.images.head", "observation.value_maps.head"


def _frame(x: float, y: float) -> torch.Tensor:
    frame = torch.full((3, SIZE, SIZE), 0.1)
    xi, yi = round(x), round(y)
    frame[:, yi : yi + SQUARE, xi : xi + SQUARE] = torch.tensor([0.9, 0.8, 0.2])[:, None, None]
    return frame


def _value_map(x: float, y: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    centre = (SQUARE - 1) / 2
    return torch.exp(-((xs - x - centre) ** 2 + (ys - y - centre) ** 2) / 8.0)[None].repeat(3, 1, 1)


def _batch(config, size: int, generator: torch.Generator) -> dict:
    """Samples at LeRobot's delta indices: (B, T, 3, H, W) frames and maps in [0, 1], (B, T', 2) actions."""
    frames, maps, actions = [], [], []
    for _ in range(size):
        direction = 1.0 if torch.rand(1, generator=generator) < 0.5 else -1.0
        y = float(torch.randint(2, SIZE - SQUARE - 2, (1,), generator=generator))
        x0 = float(torch.randint(8, SIZE - SQUARE - 7, (1,), generator=generator))
        xs = [x0 + direction * SPEED * d for d in config.observation_delta_indices]
        frames.append(torch.stack([_frame(x, y) for x in xs]))
        maps.append(torch.stack([_value_map(x, y) for x in xs]))
        actions.append(torch.tensor([direction, 0.0]).repeat(len(config.action_delta_indices), 1))
    return {
        IMAGES: torch.stack(frames),
        MAPS: torch.stack(maps),
        "action": torch.stack(actions),
        "task": ["slide"] * size,
    }


def _stats(batch: dict) -> dict:
    """Per-channel image statistics as LeRobot's compute_stats gives them (in [0, 1])."""

    def channel_stats(x):
        x = x.flatten(0, 1)
        return {"mean": x.mean((0, 2, 3)).view(3, 1, 1), "std": x.std((0, 2, 3)).view(3, 1, 1)}

    return {
        IMAGES: channel_stats(batch[IMAGES]),
        MAPS: channel_stats(batch[MAPS]),
        "action": {"mean": torch.zeros(2), "std": torch.ones(2)},
    }


@pytest.mark.slow
def test_tiny_preset_trained_briefly_imagines_the_motion_without_keeping_noise():
    torch.manual_seed(0)
    config = load_preset("aim_tiny", num_layers=1, device="cpu")  # the preset's widths, one layer
    config.cameras = ["head"]
    config.input_features = {
        IMAGES: PolicyFeature(FeatureType.VISUAL, (3, SIZE, SIZE)),
        MAPS: PolicyFeature(FeatureType.VISUAL, (3, SIZE, SIZE)),
    }
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (2,))}
    data = torch.Generator().manual_seed(0)
    stats = _stats(_batch(config, 64, data))
    policy = AIMPolicy(config, dataset_stats=stats)
    pre, _ = make_aim_pre_post_processors(config, stats)
    optimizer = torch.optim.AdamW(policy.get_optim_params(), lr=1e-3)
    for _ in range(400):
        loss, _ = policy(pre(_batch(config, 16, data)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()

    # Held-out samples; the policy plans from the two context frames.
    test = _batch(config, 96, torch.Generator().manual_seed(123))
    context_frames = 1 + config.history_frames
    canvas = pre({IMAGES: test[IMAGES], "task": test["task"]})[OBS_RGB_CANVAS]
    latents = policy.rgb_latent_norm.normalize(policy._encode_video(canvas))
    context = Context(
        latents[:, :, :context_frames],
        torch.zeros(96, config.num_past_actions, 2),
        policy._encode_text(test, 96),
    )
    shape = (96, latents.shape[1], config.future_frames, *latents.shape[-2:])
    generator = torch.Generator().manual_seed(5)
    noise = Prediction(
        torch.randn(shape, generator=generator),
        torch.randn(shape, generator=generator),
        torch.randn(96, config.chunk_size, 2, generator=generator),
    )
    pred, _ = sample_chunk(policy.model, context, noise, ChunkSchedule.of(config))
    policy.remember(pred, context)

    truth_frames, truth_maps = test[IMAGES][:, context_frames:], test[MAPS][:, context_frames:, 0]
    copy_frames = test[IMAGES][:, context_frames - 1 : context_frames].expand_as(truth_frames)
    copy_maps = test[MAPS][:, context_frames - 1 : context_frames, 0].expand_as(truth_maps)
    frames, maps = policy.decode_predicted_rgb(), policy.decode_value_maps().mean(2)
    assert (frames - truth_frames).square().mean() < (copy_frames - truth_frames).square().mean()
    assert (maps - truth_maps).square().mean() < (copy_maps - truth_maps).square().mean()

    # The sampled future's error does not follow the initial noise: its regression coefficient on
    # it (1 where the sampler keeps the noise; at least a third for a stream narrower than its token).
    error = pred.rgb - latents[:, :, context_frames:]
    coefficient = (error * noise.rgb).sum() / noise.rgb.square().sum()
    assert coefficient < 0.3
