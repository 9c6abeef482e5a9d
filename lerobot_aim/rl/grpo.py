"""GRPO objective for the action stream (paper Sec. 4.3.4) and Stage II freezing.

``L_GRPO = E_t[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)]`` is maximised; :func:`grpo_loss`
returns its negative (plus an optional KL penalty) for gradient descent.

Ratio level. A chunk's log-probability is a sum over K denoising steps
(:mod:`lerobot_aim.model.sampling`). The default,
``ratio_level="step"``, treats every denoising step as one decision with its own ratio
rho_{t,k} = pi(a_{k+1} | a_k) / pi_old(a_{k+1} | a_k), clipped separately and averaged over steps (as
Flow-GRPO does); the chunk's advantage applies to each of its steps. This keeps ratios near 1
(a product of K per-step ratios drifts quickly) and clips only the steps that moved too far.
``ratio_level="chunk"`` uses rho_t = pi(chunk) / pi_old(chunk) = exp(sum_k log-ratio_k), the paper's
ratio read literally. Both use exact per-step log-densities (summed over the chunk and action dims).

KL to the reference (Stage I) policy. Each step is a Gaussian with the same std under both policies,
so KL(pi_theta || pi_ref) per step is ``||mu_theta - mu_ref||^2 / (2 s_k^2)`` (exact), averaged over
steps and chunks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

RATIO_LEVELS = ("step", "chunk")


def freeze_all_but_action_stream(policy: nn.Module) -> list[nn.Parameter]:
    """Stage II: freeze everything (RGB and value streams, codec, text encoder) except
    ``policy.model.action``; returns the trainable parameters.

    The context's action-stream tokens (past actions, state) move to a frozen copy of the action
    stream first (:meth:`AIMTransformer.split_context_action_stream`): the RGB and value streams read
    them, so training the stream that embeds them would change the predictions that must stay frozen."""
    policy.model.split_context_action_stream()
    policy.requires_grad_(False)
    frozen = getattr(policy, "_frozen", None)
    for part in (getattr(frozen, "codec", None), getattr(frozen, "text_encoder", None)):
        if isinstance(part, nn.Module):
            part.requires_grad_(False)
    action = policy.model.action
    action.requires_grad_(True)
    return [p for p in action.parameters() if p.requires_grad]


def reference_action_stream(policy: nn.Module) -> nn.Module:
    """The Stage I action stream, frozen (the reference of the KL term): the copy that embeds the
    context (:func:`freeze_all_but_action_stream` made it from the Stage I weights)."""
    reference = policy.model.context_action
    if reference is None:
        raise ValueError("Call freeze_all_but_action_stream(policy) first: it keeps the Stage I action stream.")
    return reference.eval()


def gaussian_kl_same_std(mean_p: Tensor, mean_q: Tensor, std: Tensor) -> Tensor:
    """(B, K) KL(N(mean_p, s^2) || N(mean_q, s^2)) per step, summed over the chunk and action dims.

    Means are (B, K, ...), ``std`` (K,); steps with std 0 give 0.
    """
    std = std.to(mean_p.device, torch.float32)
    sq = (mean_p.float() - mean_q.float()).pow(2).flatten(2).sum(-1)  # (B, K)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    return torch.where(std > 0, sq / (2 * safe**2), torch.zeros_like(sq))


@contextlib.contextmanager
def use_action_stream(model: nn.Module, stream: nn.Module) -> Iterator[None]:
    """Run ``model`` (an AIMTransformer) with another action stream, e.g. the reference one."""
    original = model.action
    model.action = stream
    try:
        yield
    finally:
        model.action = original


def grpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_epsilon: float,
    step_mask: Tensor | None = None,
    ratio_level: str = "step",
    kl_ref: Tensor | None = None,
    kl_weight: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped-ratio GRPO loss (to minimise) and its statistics.

    Args:
        log_probs: (B, K) per-step log-probabilities under the current weights (differentiable).
        old_log_probs: (B, K) the same under the weights that sampled the chunks.
        advantages: (B,) advantage of each chunk (its episode's group-normalised return).
        clip_epsilon: eps of clip(rho, 1 - eps, 1 + eps).
        step_mask: (K,) or (B, K) bool, the stochastic steps (std > 0); default all.
        ratio_level: "step" (per denoising step, default) or "chunk" (whole chain).
        kl_ref: (B, K) per-step KL to the reference policy (differentiable), or None.
        kl_weight: its weight beta in L = -L_GRPO + beta KL.
    Returns:
        loss, and floats: policy_loss, clip_frac, approx_kl (0.5 E[(log rho)^2], old vs new),
        ratio_mean, kl_ref.
    """
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"ratio_level must be one of {RATIO_LEVELS}, got {ratio_level!r}")
    batch, steps = log_probs.shape
    mask = torch.ones(batch, steps, dtype=torch.bool, device=log_probs.device)
    if step_mask is not None:
        mask = mask & step_mask.to(log_probs.device).expand(batch, steps)
    maskf = mask.float()
    log_ratio = (log_probs - old_log_probs.to(log_probs)) * maskf
    adv = advantages.to(log_probs).reshape(-1)
    if ratio_level == "step":
        ratio, weight, adv_b = torch.exp(log_ratio), maskf, adv[:, None].expand(batch, steps)
    else:
        ratio, weight, adv_b = torch.exp(log_ratio.sum(-1)), torch.ones_like(adv), adv
    unclipped = ratio * adv_b
    clipped = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * adv_b
    denom = weight.sum().clamp(min=1)
    policy_loss = -(torch.minimum(unclipped, clipped) * weight).sum() / denom
    loss = policy_loss
    kl_value = 0.0
    if kl_ref is not None:
        kl_mean = (kl_ref * maskf).sum() / maskf.sum().clamp(min=1)
        kl_value = kl_mean.item()
        if kl_weight:
            loss = loss + kl_weight * kl_mean
    with torch.no_grad():
        clip_frac = (((ratio - 1).abs() > clip_epsilon).float() * weight).sum() / denom
        lr_detached = log_ratio.detach() if ratio_level == "step" else log_ratio.detach().sum(-1)
        approx_kl = 0.5 * (lr_detached.pow(2) * weight).sum() / denom
        ratio_mean = (ratio.detach() * weight).sum() / denom
    stats = {
        "policy_loss": policy_loss.item(),
        "clip_frac": clip_frac.item(),
        "approx_kl": approx_kl.item(),
        "ratio_mean": ratio_mean.item(),
        "kl_ref": kl_value,
    }
    return loss, stats


@dataclass(frozen=True)
class UpdateSettings:
    """How :func:`grpo_update` learns from one iteration's chunks."""

    clip_epsilon: float = 0.2  # eps of clip(rho, 1 - eps, 1 + eps)
    ratio_level: str = "step"  # "step" (Flow-GRPO) or "chunk" (see the module doc)
    kl_weight: float = 0.0  # beta of the KL term to the reference policy
    num_epochs: int = 1  # passes over the chunks
    minibatch_size: int = 0  # chunks per optimizer step (0: all)
    max_grad_norm: float = 1.0  # gradient clipping (0: none)


def grpo_update(
    policy: nn.Module,
    trajectories,
    advantages: Tensor,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    settings: UpdateSettings,
    reference: nn.Module | None = None,
) -> dict[str, float]:
    """PPO-style epochs over the chunks: recompute log-probs, clipped loss, one optimizer step per
    minibatch. ``trajectories`` is an :class:`~lerobot_aim.model.sampling.ActionTrajectory` of B chunks
    (any device), ``advantages`` (B,). ``reference`` (a frozen action stream) adds the KL term / its log."""
    from lerobot_aim.model.sampling import trajectory_log_probs

    model = policy.model
    device = next(model.parameters()).device
    total = trajectories.batch_size
    size = settings.minibatch_size if settings.minibatch_size > 0 else total
    step_mask = (trajectories.step_std > 0).to(device)
    sums: dict[str, float] = {}
    updates = 0
    for _ in range(settings.num_epochs):
        order = torch.randperm(total)
        for start in range(0, total, size):
            index = order[start : start + size]
            batch = trajectories.select(index).to(device)
            with policy.compute_precision():
                log_probs, means = trajectory_log_probs(model, batch, return_means=True)
            kl = None
            if reference is not None:
                with torch.no_grad(), use_action_stream(model, reference), policy.compute_precision():
                    _, ref_means = trajectory_log_probs(model, batch, return_means=True)
                kl = gaussian_kl_same_std(means, ref_means, batch.step_std)
            loss, stats = grpo_loss(
                log_probs,
                batch.log_probs,
                advantages[index].to(device),
                settings.clip_epsilon,
                step_mask=step_mask,
                ratio_level=settings.ratio_level,
                kl_ref=kl,
                kl_weight=settings.kl_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = settings.max_grad_norm if settings.max_grad_norm > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
            stats["loss"] = loss.item()
            stats["grad_norm"] = float(grad_norm)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            updates += 1
    return {key: value / max(updates, 1) for key, value in sums.items()} | {"updates": float(updates)}
