"""The one chunk sampler: ODE and flow-SDE actions, separate video and action step counts, exact
log-densities, and log-prob recomputation."""

import pytest
import torch

from lerobot_aim.model.flow_matching import flow_step_mean, gaussian_log_prob, inference_sigmas, sde_step_std
from lerobot_aim.model.mot import Context, Prediction
from lerobot_aim.model.sampling import (
    ActionTrajectory,
    ChunkSchedule,
    sample_actions_given_video,
    sample_chunk,
    trajectory_log_probs,
)
from lerobot_aim.modeling_aim import AIMPolicy
from tests.conftest import with_one_camera

BATCH = 3


@pytest.fixture
def model(tiny_config):
    tiny_config.num_inference_steps = 5
    return AIMPolicy(with_one_camera(tiny_config)).eval().model


def _inputs(model, seed=0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    channels = 3 * cfg.pixel_patch_size**2
    grid = cfg.image_size[0] // cfg.pixel_patch_size
    obs = torch.randn(BATCH, channels, cfg.history_frames + 1, grid, grid, generator=g)
    past = torch.randn(BATCH, cfg.num_past_actions, 2, generator=g)
    text = torch.randn(BATCH, cfg.text_max_length, cfg.text_dim, generator=g)
    shape = (BATCH, channels, cfg.future_frames, grid, grid)
    noise = Prediction(
        torch.randn(shape, generator=g),
        torch.randn(shape, generator=g),
        torch.randn(BATCH, cfg.chunk_size, 2, generator=g),
    )
    return Context(obs, past, text), noise


def _sample(model, sde_noise, seed=0, video_steps=None):
    context, noise = _inputs(model, seed)
    schedule = ChunkSchedule.of(model.config, action_noise=sde_noise)
    if video_steps is not None:
        schedule = ChunkSchedule(video_steps, schedule.action_steps, schedule.video_shift, schedule.action_shift, sde_noise)
    return sample_chunk(model, context, noise, schedule, record=True)


def test_gaussian_log_density_matches_torch_normal():
    value, mean = torch.randn(4, 5), torch.randn(4, 5)
    for std in (1e-3, 0.3, 2.0):
        expected = torch.distributions.Normal(mean, std).log_prob(value)
        assert torch.allclose(gaussian_log_prob(value, mean, std), expected, atol=1e-4, rtol=1e-5)


def test_zero_noise_is_the_ode_sampler(model):
    """With zero action noise the sampler is the probability-flow ODE: a hand-written Euler loop over
    the model's joint forward, independent of the sampler's cache and step code."""
    cfg = model.config
    context, noise = _inputs(model)
    video_sigmas = inference_sigmas(cfg.num_inference_steps, cfg.video_infer_shift)
    action_sigmas = inference_sigmas(cfg.num_inference_steps, cfg.action_infer_shift)
    x, m, a = noise.rgb, noise.value, noise.actions
    with torch.no_grad():
        for i in range(cfg.num_inference_steps):
            v = model(context, Prediction(x, m, a), video_sigmas[i].expand(BATCH), action_sigmas[i].expand(BATCH))
            x = x + (video_sigmas[i + 1] - video_sigmas[i]) * v.rgb
            m = m + (video_sigmas[i + 1] - video_sigmas[i]) * v.value
            a = a + (action_sigmas[i + 1] - action_sigmas[i]) * v.actions
    pred, trajectory = _sample(model, 0.0)
    for field, expected in (("actions", a), ("value", m), ("rgb", x)):
        torch.testing.assert_close(getattr(pred, field), expected, rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(trajectory.log_probs) == 0  # deterministic steps carry no density

    small, _ = _sample(model, 1e-4)
    assert torch.allclose(small.actions, pred.actions, atol=1e-3)
    assert not torch.equal(small.actions, pred.actions)
    assert torch.equal(small.value, pred.value)  # x and m stay on the ODE whatever the action noise


def test_fewer_video_steps_then_actions_alone_on_the_final_video(model):
    """video_steps < action_steps: x and m take their own Euler steps, then the remaining action steps
    read the final video at noise level 0 (checked against a hand-written loop of joint passes)."""
    cfg = model.config
    context, noise = _inputs(model)
    video_sigmas, action_sigmas = inference_sigmas(2, cfg.video_infer_shift), inference_sigmas(5, cfg.action_infer_shift)
    x, m, a = noise.rgb, noise.value, noise.actions
    with torch.no_grad():
        for i in range(5):
            j = min(i, 2)
            v = model(context, Prediction(x, m, a), video_sigmas[j].expand(BATCH), action_sigmas[i].expand(BATCH))
            if i < 2:
                x = x + (video_sigmas[i + 1] - video_sigmas[i]) * v.rgb
                m = m + (video_sigmas[i + 1] - video_sigmas[i]) * v.value
            a = a + (action_sigmas[i + 1] - action_sigmas[i]) * v.actions
    pred, trajectory = _sample(model, 0.0, video_steps=2)
    for field, expected in (("actions", a), ("value", m), ("rgb", x)):
        torch.testing.assert_close(getattr(pred, field), expected, rtol=1e-5, atol=1e-5)
    assert trajectory.rgb.shape[1] == 3 and trajectory.actions.shape[1] == 6  # video states 0..2, actions 0..5
    _, stochastic = _sample(model, 0.5, video_steps=2)
    ratio = torch.exp(trajectory_log_probs(model, stochastic) - stochastic.log_probs)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)


def test_actions_on_a_given_video_read_it_clean_at_every_step(model):
    """sample_actions_given_video: every action step reads the given x and m at noise level 0 (checked
    against a hand-written Euler loop of joint passes); x and m are not changed."""
    cfg = model.config
    context, noise = _inputs(model)
    given = Prediction(noise.rgb * 0.5, noise.value * 0.5 + 1.0, None)
    action_sigmas = inference_sigmas(cfg.num_inference_steps, cfg.action_infer_shift)
    clean = torch.zeros(BATCH)
    a = noise.actions
    with torch.no_grad():
        for i in range(cfg.num_inference_steps):
            v = model(context, Prediction(given.rgb, given.value, a), clean, action_sigmas[i].expand(BATCH))
            a = a + (action_sigmas[i + 1] - action_sigmas[i]) * v.actions
    schedule = ChunkSchedule.of(cfg)
    for use_cache in (True, False):
        actions = sample_actions_given_video(model, context, given, noise.actions, schedule, use_cache)
        torch.testing.assert_close(actions, a, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="action_noise=0"):
        sample_actions_given_video(model, context, given, noise.actions, ChunkSchedule.of(cfg, action_noise=0.5))


def test_given_value_maps_reach_the_actions(model):
    """The actions read the value maps they are given (what the oracle and blank-map ablations of
    benchmarks.value_maps rely on): other maps, other actions; the same maps, the same actions."""
    context, noise = _inputs(model)
    schedule = ChunkSchedule.of(model.config)

    def actions(value):
        return sample_actions_given_video(model, context, Prediction(noise.rgb, value, None), noise.actions, schedule)

    base = actions(noise.value)
    assert torch.equal(actions(noise.value.clone()), base)
    assert not torch.allclose(actions(-noise.value), base, atol=1e-4)


def test_each_step_is_the_stated_gaussian(model):
    """The stored chain's steps are draws from N(mu_k, s_k^2) with the documented mean and std."""
    pred, t = _sample(model, 0.7)
    assert t.actions.shape == (BATCH, t.num_steps + 1, model.config.chunk_size, 2)
    assert torch.equal(t.actions[:, -1], pred.actions.float())
    log_probs, means = trajectory_log_probs(model, t, return_means=True)
    z = (t.actions[:, 1:] - means) / t.step_std.view(1, -1, 1, 1)
    assert abs(z.mean().item()) < 0.2 and abs(z.std().item() - 1) < 0.15  # standardised residuals ~ N(0, 1)
    expected = torch.distributions.Normal(means, t.step_std.view(1, -1, 1, 1)).log_prob(t.actions[:, 1:])
    assert torch.allclose(log_probs, expected.flatten(2).sum(-1), rtol=1e-5, atol=1e-3)


def test_recomputed_log_probs_under_unchanged_weights_give_ratio_one(model):
    _, trajectory = _sample(model, 0.5)
    log_probs = trajectory_log_probs(model, trajectory)
    ratio = torch.exp(log_probs - trajectory.log_probs)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)
    # Through select / cat / to (how the trainer stores and minibatches chunks) it still holds.
    parts = ActionTrajectory.cat([trajectory.select(slice(0, 1)), trajectory.select(slice(1, None))]).to(
        "cpu"
    )
    again = trajectory_log_probs(model, parts.select(torch.tensor([2, 0])))
    assert torch.allclose(
        torch.exp(again - trajectory.log_probs[[2, 0]]), torch.ones(2, trajectory.num_steps), atol=1e-5
    )


def test_changed_action_weights_change_the_log_probs(model):
    _, trajectory = _sample(model, 0.5)
    with torch.no_grad():
        model.action.proj_out.weight.add_(0.05 * torch.randn_like(model.action.proj_out.weight))
    assert not torch.allclose(trajectory_log_probs(model, trajectory), trajectory.log_probs, atol=1e-3)


def test_sde_keeps_the_marginals_of_the_flow():
    """With the exact velocity of x0 ~ N(0, s^2), the SDE ends at N(0, s^2) as the ODE does."""
    s, n = 0.3, 20000
    schedule = inference_sigmas(200, 1.0)
    for noise_level in (0.0, 0.7):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, generator=g)
        stds = sde_step_std(schedule, noise_level)
        sigmas = noise_level * torch.sqrt(
            schedule[:-1] / (1 - torch.where(schedule[:-1] >= 1, schedule[1], schedule[:-1]))
        )
        for k in range(200):
            t, t_next = schedule[k].item(), schedule[k + 1].item()
            velocity = (t - (1 - t) * s**2) / ((1 - t) ** 2 * s**2 + t**2) * x  # E[eps - x0 | x_t]
            x = flow_step_mean(x, velocity, t, t_next, sigmas[k].item()) + stds[k] * torch.randn(
                n, generator=g
            )
        assert x.std().item() == pytest.approx(s, rel=0.05), noise_level
        assert abs(x.mean().item()) < 0.02
