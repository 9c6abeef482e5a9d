"""Rectified-flow matching as Wan2.2 trains and samples it, and its stochastic (SDE) sampler.

x_sigma = (1 - sigma) x_0 + sigma eps, and the network predicts the velocity v = eps - x_0.
Noise levels are shifted towards noise by sigma' = s sigma / (1 + (s - 1) sigma) (Wan's flow
shift). The inference schedule is diffusers' ``FlowMatchEulerDiscreteScheduler``; x and m follow
one schedule (the same trajectory), the actions another (their own shift and step count).

Sampling steps (:func:`flow_step`). A flow-matching head has no tractable density when it samples
with the probability-flow ODE, so Stage II samples the actions with a stochastic differential
equation that has the same marginals (Flow-GRPO, Liu et al. 2025; piRL's flow-SDE): each step is then
a Gaussian with a known mean and standard deviation. With this module's convention::

    E[eps | x_t] = x_t + (1 - t) v,    score  grad log p_t(x) = -E[eps | x_t] / t

and the reverse-time SDE with diffusion sigma_t that keeps the ODE's marginals is
``dx = [v + sigma_t^2/(2t) (x + (1-t) v)] dt + sigma_t dW``. One Euler-Maruyama step from t_k to
t_{k+1} < t_k (dt = t_{k+1} - t_k < 0) is the Gaussian::

    x_{k+1} ~ N(mu_k, s_k^2 I)
    mu_k  = x_k + dt [v_k + sigma_k^2 / (2 t_k) (x_k + (1 - t_k) v_k)]
    s_k   = sigma_k sqrt(-dt)
    sigma_k = noise * sqrt(t_k / (1 - t_k))          (t_k = 1 uses 1 - t_1 in the denominator)

With ``noise = 0`` the step is the ODE's Euler step x_k + dt v_k: the deterministic sampler is the
zero-noise case of the stochastic one.
"""

from __future__ import annotations

import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

NUM_TRAIN_TIMESTEPS = 1000
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def sample_sigmas(
    batch_size: int, shift: float, device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) training noise levels: uniform in (0, 1], then shifted."""
    u = torch.rand(batch_size, device=device, generator=generator)
    return shift_sigma(u.clamp(min=1.0 / NUM_TRAIN_TIMESTEPS), shift)


def add_noise(clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma = (1 - sigma) x_0 + sigma eps, with sigma (B,) broadcast over the other dims."""
    sigma = sigma.view(-1, *([1] * (clean.ndim - 1))).to(clean.dtype)
    return (1 - sigma) * clean + sigma * noise


def velocity_target(clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - clean


def inference_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """(num_steps + 1,) decreasing noise levels ending at 0, from diffusers' flow-matching scheduler."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    scheduler.set_timesteps(num_steps)
    return scheduler.sigmas.float()


def sde_sigmas(schedule: torch.Tensor, noise: float) -> torch.Tensor:
    """(K,) diffusion levels sigma_k = noise sqrt(t_k / (1 - t_k)) of the K steps of ``schedule`` (K + 1,).

    ``t_k = 1`` (the first step of an unshifted schedule) would divide by zero; as in Flow-GRPO the
    denominator then uses the next level, ``1 - t_1``.
    """
    t = schedule[:-1].double()
    fallback = schedule[1].double() if len(schedule) > 2 else torch.tensor(0.5, dtype=torch.float64)
    denominator = 1 - torch.where(t >= 1, fallback, t)
    return (noise * torch.sqrt(t / denominator)).float()


def sde_step_std(schedule: torch.Tensor, noise: float) -> torch.Tensor:
    """(K,) standard deviations s_k = sigma_k sqrt(t_k - t_{k+1}) of the K Gaussian steps."""
    dt = (schedule[:-1] - schedule[1:]).double()
    return (sde_sigmas(schedule, noise).double() * torch.sqrt(dt)).float()


def flow_step_mean(sample: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float, sigma: float):
    """mu = x + dt [v + sigma^2 / (2t) (x + (1 - t) v)] in float32 (dt = t_next - t < 0); with
    ``sigma = 0`` the Euler step x + dt v of the probability-flow ODE."""
    sample, velocity = sample.float(), velocity.float()
    dt = t_next - t
    if sigma == 0 or t <= 0:
        return sample + dt * velocity
    return sample + dt * (velocity + sigma**2 / (2 * t) * (sample + (1 - t) * velocity))


def euler_step(sample: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One deterministic step of the probability-flow ODE dx/dsigma = v, in the sample's dtype."""
    return flow_step_mean(sample, velocity, sigma, sigma_next, 0.0).to(sample.dtype)


def gaussian_log_prob(value: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """Elementwise log N(value; mean, std^2) (std > 0)."""
    std = torch.as_tensor(std, dtype=torch.float32, device=value.device)
    return -((value.float() - mean.float()) ** 2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI
