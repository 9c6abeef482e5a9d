"""Stage II objective: clipping, sign, freezing (only the action stream learns), one update."""

import pytest
import torch

from lerobot_aim.model.mot import Context, Prediction
from lerobot_aim.model.sampling import ChunkSchedule, sample_chunk, trajectory_log_probs
from lerobot_aim.modeling_aim import AIMPolicy
from lerobot_aim.rl.grpo import (
    UpdateSettings,
    freeze_all_but_action_stream,
    gaussian_kl_same_std,
    grpo_loss,
    grpo_update,
    reference_action_stream,
    use_action_stream,
)
from tests.conftest import with_one_camera

EPS = 0.2


def _grad(log_ratio: float, advantage: float, ratio_level="step") -> float:
    log_probs = torch.tensor([[log_ratio]], requires_grad=True)
    loss, _ = grpo_loss(log_probs, torch.zeros(1, 1), torch.tensor([advantage]), EPS, ratio_level=ratio_level)
    loss.backward()
    return log_probs.grad.item()


def test_loss_sign_increases_the_probability_of_good_chunks():
    assert _grad(0.0, 2.0) == pytest.approx(-2.0)  # descent raises log pi where A > 0
    assert _grad(0.0, -1.0) == pytest.approx(1.0)
    loss, stats = grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -3.0]), EPS)
    assert loss.item() == pytest.approx(-(1.0 - 3.0) / 2)  # -E[rho A] at rho = 1
    assert (
        stats["clip_frac"] == 0.0 and stats["approx_kl"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)
    )


@pytest.mark.parametrize("ratio_level", ["step", "chunk"])
def test_clipping_stops_the_gradient_only_where_the_objective_is_clipped(ratio_level):
    up, down = torch.log(torch.tensor(1.5)).item(), torch.log(torch.tensor(0.5)).item()
    assert _grad(up, 1.0, ratio_level) == 0.0  # already more likely than 1 + eps allows: no push further
    assert _grad(down, -1.0, ratio_level) == 0.0  # already less likely than 1 - eps allows
    assert _grad(up, -1.0, ratio_level) == pytest.approx(1.5)  # the pessimistic branch still pulls it back
    assert _grad(down, 1.0, ratio_level) == pytest.approx(-0.5)
    _, stats = grpo_loss(torch.tensor([[up, 0.0]]), torch.zeros(1, 2), torch.ones(1), EPS, ratio_level="step")
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_masked_steps_and_chunk_ratio():
    log_probs = torch.tensor([[0.1, 0.05, 7.0]], requires_grad=True)
    mask = torch.tensor([True, True, False])  # a deterministic (std 0) step: not a decision
    loss, stats = grpo_loss(
        log_probs, torch.zeros(1, 3), torch.ones(1), 0.5, step_mask=mask, ratio_level="chunk"
    )
    assert loss.item() == pytest.approx(-torch.exp(torch.tensor(0.15)).item(), rel=1e-6)
    loss.backward()
    assert log_probs.grad[0, 2] == 0.0


def test_kl_term_is_added_with_its_weight():
    kl = torch.tensor([[0.2, 0.4]])
    base, _ = grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), EPS)
    with_kl, stats = grpo_loss(
        torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), EPS, kl_ref=kl, kl_weight=0.5
    )
    assert with_kl.item() == pytest.approx(base.item() + 0.5 * 0.3)
    assert stats["kl_ref"] == pytest.approx(0.3)


@pytest.fixture
def policy(tiny_config):
    tiny_config.num_inference_steps = 4
    return AIMPolicy(with_one_camera(tiny_config)).eval()


def _inputs(policy, batch=2, seed=0) -> tuple[Context, Prediction]:
    cfg = policy.config
    g = torch.Generator().manual_seed(seed)
    channels, grid = 3 * cfg.pixel_patch_size**2, cfg.image_size[0] // cfg.pixel_patch_size
    shape = (batch, channels, cfg.future_frames, grid, grid)
    context = Context(
        torch.randn(batch, channels, cfg.history_frames + 1, grid, grid, generator=g),
        torch.randn(batch, cfg.num_past_actions, 2, generator=g),
        torch.randn(batch, cfg.text_max_length, cfg.text_dim, generator=g),
    )
    noise = Prediction(
        torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn(batch, cfg.chunk_size, 2, generator=g)
    )
    return context, noise


def _trajectory(policy, batch=2):
    context, noise = _inputs(policy, batch)
    schedule = ChunkSchedule.of(policy.config, action_noise=0.5)
    return sample_chunk(policy.model, context, noise, schedule, record=True)[1]


def test_only_the_action_stream_gets_gradients(policy):
    params = freeze_all_but_action_stream(policy)
    assert {id(p) for p in params} == {id(p) for p in policy.model.action.parameters()}
    trajectory = _trajectory(policy)
    log_probs = trajectory_log_probs(policy.model, trajectory)
    loss, _ = grpo_loss(log_probs, trajectory.log_probs, torch.tensor([1.0, -1.0]), EPS)
    loss.backward()
    for name, param in policy.named_parameters():
        if name.startswith("model.action."):
            assert param.requires_grad
        else:
            assert not param.requires_grad and param.grad is None, name
    assert policy.model.context_action is not None  # the context's action tokens: a frozen Stage I copy
    assert all(p.grad is not None for p in params)
    assert sum(p.grad.abs().sum().item() for p in params) > 0
    assert not any(p.requires_grad for p in policy._frozen.codec.parameters())
    assert not any(p.requires_grad for p in policy._frozen.text_encoder.parameters())


def test_reference_stream_kl_is_zero_until_the_policy_moves(policy):
    freeze_all_but_action_stream(policy)
    reference = reference_action_stream(policy)
    trajectory = _trajectory(policy)
    _, means = trajectory_log_probs(policy.model, trajectory, return_means=True)
    with torch.no_grad(), use_action_stream(policy.model, reference):
        _, ref_means = trajectory_log_probs(policy.model, trajectory, return_means=True)
    assert policy.model.action is not reference  # swapped back
    assert gaussian_kl_same_std(means, ref_means, trajectory.step_std).abs().max() < 1e-6


def test_an_update_raises_the_objective_and_moves_only_the_action_stream(policy):
    params = freeze_all_but_action_stream(policy)
    reference = reference_action_stream(policy)
    frozen_before = {
        k: v.clone() for k, v in policy.state_dict().items() if not k.startswith("model.action.")
    }
    action_before = {k: v.clone() for k, v in policy.state_dict().items() if k.startswith("model.action.")}
    trajectory = _trajectory(policy)
    advantages = torch.tensor([1.0, -1.0])
    optimizer = torch.optim.SGD(params, lr=1e-4)
    settings = UpdateSettings(clip_epsilon=EPS, max_grad_norm=0)
    stats = grpo_update(policy, trajectory, advantages, optimizer, params, settings, reference=reference)
    assert (
        stats["updates"] == 1
        and stats["clip_frac"] == 0.0
        and stats["kl_ref"] == pytest.approx(0.0, abs=1e-6)
    )
    with torch.no_grad():
        after = trajectory_log_probs(policy.model, trajectory).sum(-1)
    change = after - trajectory.log_probs.sum(-1)
    assert (advantages * change).sum() > 0  # the surrogate objective went up
    state = policy.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen_before.items())
    assert any(not torch.equal(state[k], v) for k, v in action_before.items())


def test_an_update_keeps_the_rgb_and_value_predictions_of_stage_one(policy):
    """Paper Sec. 4.3.4: Stage II freezes the video and value heads. What they predict for a fixed
    input (a joint pass, and a sampled chunk's video) stays bit-identical after GRPO updates, while the
    actions change. The RGB and value tokens read the past actions, so this holds only if the
    context's action tokens are embedded by frozen weights."""
    context, noise = _inputs(policy, seed=3)
    sigma = torch.tensor([0.6, 0.2])
    schedule = ChunkSchedule.of(policy.config)
    # Stage I's weights, frozen as Stage II holds them (which weights require gradients can change
    # the CPU kernels a linear layer runs, by one float32 ulp, even without gradients).
    params = freeze_all_but_action_stream(policy)
    with torch.no_grad():
        stage_one = policy.model(context, noise, sigma, sigma)
        stage_one_chunk, _ = sample_chunk(policy.model, context, noise, schedule)
    optimizer = torch.optim.SGD(params, lr=1e-2)
    for _ in range(2):
        settings = UpdateSettings(clip_epsilon=EPS, max_grad_norm=0)
        grpo_update(policy, _trajectory(policy), torch.tensor([1.0, -1.0]), optimizer, params, settings)
    with torch.no_grad():
        stage_two = policy.model(context, noise, sigma, sigma)
        stage_two_chunk, _ = sample_chunk(policy.model, context, noise, schedule)
    assert torch.equal(stage_two.rgb, stage_one.rgb) and torch.equal(stage_two.value, stage_one.value)
    assert torch.equal(stage_two_chunk.rgb, stage_one_chunk.rgb)
    assert torch.equal(stage_two_chunk.value, stage_one_chunk.value)
    assert not torch.allclose(stage_two.actions, stage_one.actions)
    assert not torch.allclose(stage_two_chunk.actions, stage_one_chunk.actions)


def test_kl_of_equal_std_gaussians_matches_torch():
    p, q, std = torch.randn(2, 3, 4, 2), torch.randn(2, 3, 4, 2), torch.tensor([0.5, 0.1, 0.0])
    kl = gaussian_kl_same_std(p, q, std)
    for k in range(2):
        expected = torch.distributions.kl_divergence(
            torch.distributions.Normal(p[:, k], std[k]), torch.distributions.Normal(q[:, k], std[k])
        )
        assert torch.allclose(kl[:, k], expected.flatten(1).sum(-1), rtol=1e-5)
    assert torch.count_nonzero(kl[:, 2]) == 0
