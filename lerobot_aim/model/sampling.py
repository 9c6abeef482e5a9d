"""Sampling an action chunk: the one sampler of acting (Stage I) and of GRPO rollouts (Stage II).

x, m and a start from Gaussian noise (paper Sec. 4.4, steps 3-6). x and m follow one schedule of
``video_steps`` probability-flow ODE steps; a follows its own schedule of ``action_steps`` steps,
either the ODE (``action_noise = 0``) or the flow-SDE whose steps are Gaussians with known
log-densities (Stage II, :mod:`lerobot_aim.model.flow_matching`).

Step i of the actions reads the video at state ``j = min(i, video_steps)``: the first
``video_steps`` steps advance x, m and a together; after that x and m are final, their keys and
values are computed once at noise level 0 and kept like the context's, and only the action tokens
run the remaining steps (the action stream reads the future only through them: x and m never read
the actions). With ``video_steps == action_steps`` every step is joint.

With ``use_cache`` the context is encoded once (:meth:`AIMTransformer.encode_context`, or given as
``context_kv``, e.g. by :class:`~lerobot_aim.model.context_cache.ContextKVStore` across control
steps) and every step runs only future tokens; without it every step is one joint pass over all tokens (the
reference the cache is tested against, and the benchmark's baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

import torch
from torch import Tensor

from lerobot_aim.model.flow_matching import (
    euler_step,
    flow_step_mean,
    gaussian_log_prob,
    inference_sigmas,
    sde_sigmas,
    sde_step_std,
)
from lerobot_aim.model.mot import AIMTransformer, Context, KVCache, Prediction


@dataclass(frozen=True)
class ChunkSchedule:
    """How a chunk is denoised: step counts and shifts of the two schedules, and the action noise."""

    video_steps: int
    action_steps: int
    video_shift: float
    action_shift: float
    action_noise: float = 0.0  # 0: the ODE; > 0: the flow-SDE (Stage II)

    def __post_init__(self) -> None:
        if not 1 <= self.video_steps <= self.action_steps:
            raise ValueError(
                f"video_steps ({self.video_steps}) must be in [1, action_steps = {self.action_steps}]: the "
                "video is final before the actions are (set --policy.num_video_inference_steps <= "
                "--policy.num_inference_steps)."
            )
        if self.action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {self.action_noise}.")

    @classmethod
    def of(cls, config, action_noise: float = 0.0) -> ChunkSchedule:
        """The schedule an :class:`~lerobot_aim.configuration_aim.AIMConfig` asks for."""
        return cls(
            video_steps=config.video_inference_steps,
            action_steps=config.num_inference_steps,
            video_shift=config.video_infer_shift,
            action_shift=config.action_infer_shift,
            action_noise=action_noise,
        )

    @cached_property
    def video_sigmas(self) -> Tensor:
        """(video_steps + 1,) noise levels of x and m, ending at 0."""
        return inference_sigmas(self.video_steps, self.video_shift)

    @cached_property
    def action_sigmas(self) -> Tensor:
        """(action_steps + 1,) noise levels of a, ending at 0."""
        return inference_sigmas(self.action_steps, self.action_shift)

    @cached_property
    def action_diffusion(self) -> Tensor:
        """(action_steps,) SDE diffusion level sigma_k of each action step (0 for the ODE)."""
        return sde_sigmas(self.action_sigmas, self.action_noise)

    @cached_property
    def action_std(self) -> Tensor:
        """(action_steps,) standard deviation of each action step's Gaussian (0 for the ODE)."""
        return sde_step_std(self.action_sigmas, self.action_noise)

    def video_state(self, action_step: int) -> int:
        """Which video state (0 = noise, video_steps = final) action step ``action_step`` reads."""
        return min(action_step, self.video_steps)


@dataclass
class ActionTrajectory:
    """Everything needed to recompute ``log pi(chunk)`` of sampled chunks under other weights.

    B chunks, Kv video and Ka action steps. ``rgb`` / ``value`` hold the video states x_0 .. x_Kv
    (x_Kv is the final video, read at noise level 0 by the action steps after the last video
    step); ``actions`` the action chain from the noise ``actions[:, 0]`` to the sampled chunk
    ``actions[:, Ka]`` (float32). The log-probability is ``log pi(a | H, m)`` as in the paper's ratio,
    conditioned on the stored video (frozen in Stage II).
    """

    context: Context  # model dtype
    rgb: Tensor  # (B, Kv + 1, C, F, h, w), model dtype
    value: Tensor | None  # (B, Kv + 1, C, F, h, w) or None (no value stream)
    actions: Tensor  # (B, Ka + 1, chunk, A), float32
    log_probs: Tensor  # (B, Ka) per-step log-densities, summed over the chunk and action dims
    schedule: ChunkSchedule

    @property
    def batch_size(self) -> int:
        return self.actions.shape[0]

    @property
    def num_steps(self) -> int:
        return self.actions.shape[1] - 1

    @property
    def step_std(self) -> Tensor:
        """(Ka,) std of each action step."""
        return self.schedule.action_std

    def map(self, fn) -> ActionTrajectory:
        """The trajectory with ``fn`` applied to every batched tensor (the context's included)."""
        return _join([self], lambda tensors: fn(tensors[0]))

    def select(self, index: Tensor | slice | list[int]) -> ActionTrajectory:
        """The trajectories of the chunks at ``index`` (batch dim)."""
        return self.map(lambda t: t[index])

    def to(self, device, non_blocking: bool = False) -> ActionTrajectory:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    @staticmethod
    def cat(trajectories: list[ActionTrajectory]) -> ActionTrajectory:
        """Concatenate along the batch dim (same schedule)."""
        return _join(trajectories, lambda tensors: torch.cat(tensors, 0))


def _join(trajectories: list[ActionTrajectory], combine) -> ActionTrajectory:
    """One trajectory whose tensors are ``combine([the same tensor of each trajectory])``."""

    def join(values: list):
        first = values[0]
        if isinstance(first, Context):
            return Context(*(join([getattr(v, f.name) for v in values]) for f in fields(Context)))
        return combine(values) if isinstance(first, Tensor) else first

    return ActionTrajectory(
        **{f.name: join([getattr(t, f.name) for t in trajectories]) for f in fields(ActionTrajectory)}
    )


class _VideoReader:
    """The video the action steps read: cached keys and values per video state (or, without the
    cache, the state itself for a joint pass)."""

    def __init__(
        self,
        model: AIMTransformer,
        context: Context,
        schedule: ChunkSchedule,
        use_cache: bool,
        context_kv: KVCache | None = None,
    ):
        self.model, self.context, self.schedule = model, context, schedule
        if context_kv is None and use_cache:
            context_kv = model.encode_context(context)
        self.cache = context_kv
        self.video_sigmas = schedule.video_sigmas
        self._state: int | None = None
        self._with_video: KVCache | None = None

    def sigma(self, state: int, batch: int, device) -> Tensor:
        return torch.full((batch,), self.video_sigmas[state].item(), device=device)

    def step(self, state: int, x: Tensor, m: Tensor | None, a: Tensor, sigma_a: Tensor) -> Prediction:
        """Velocities at video state ``state`` (x, m) and the actions' current state ``a``. The video's
        velocity is returned only while it still denoises (state < video_steps)."""
        batch, device = a.shape[0], a.device
        sigma_v = self.sigma(state, batch, device)
        if self.cache is None:
            v = self.model(self.context, Prediction(x, m, a), sigma_v, sigma_a)
            return v if state < self.schedule.video_steps else replace(v, rgb=None, value=None)
        video = Prediction(None, None, None)
        if state != self._state:
            video, self._with_video = self.model.denoise_video(self.cache, x, m, sigma_v)
            self._state = state
        actions = self.model.denoise_actions(self._with_video, a, sigma_a)
        return replace(video, actions=actions)


def _action_step(
    reader: _VideoReader, i: int, x, m, a: Tensor, dtype, video_state: int | None = None
) -> tuple[Prediction, Tensor, float]:
    """Action step i from a_i (float32), reading the video (x, m) at ``video_state`` (default: the
    schedule's state of step i): the velocities (the video's while it denoises), and the mean and
    standard deviation of the Gaussian that a_{i+1} is drawn from (std 0: the ODE step)."""
    schedule = reader.schedule
    sigmas = schedule.action_sigmas
    t, t_next = sigmas[i].item(), sigmas[i + 1].item()
    state = schedule.video_state(i) if video_state is None else video_state
    v = reader.step(state, x, m, a.to(dtype), torch.full((a.shape[0],), t, device=a.device))
    mean = flow_step_mean(a, v.actions, t, t_next, schedule.action_diffusion[i].item())
    return v, mean, schedule.action_std[i].item()


@torch.no_grad()
def sample_chunk(
    model: AIMTransformer,
    context: Context,
    noise: Prediction,
    schedule: ChunkSchedule,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    record: bool = False,
    context_kv: KVCache | None = None,
) -> tuple[Prediction, ActionTrajectory | None]:
    """Denoise x, m and a from Gaussian ``noise``: the clean video and the sampled chunk, and (with
    ``record``) the :class:`ActionTrajectory` with each action step's log-probability.

    ``context_kv``: the context's keys and values if already computed (the sampler then reads them
    instead of encoding ``context``)."""
    dtype = context.obs_latents.dtype
    video_sigmas = schedule.video_sigmas
    reader = _VideoReader(model, context, schedule, use_cache, context_kv)
    x, m, a = noise.rgb, noise.value, noise.actions.float()
    xs, ms, chain, log_probs = [x], [m], [a], []
    for i in range(schedule.action_steps):
        state = schedule.video_state(i)
        v, mean, std = _action_step(reader, i, x, m, a, dtype)
        if state < schedule.video_steps:
            sv, sv_next = video_sigmas[state].item(), video_sigmas[state + 1].item()
            x = euler_step(x, v.rgb, sv, sv_next)
            m = euler_step(m, v.value, sv, sv_next) if m is not None else None
            xs.append(x), ms.append(m)
        if std > 0:
            a = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            log_probs.append(gaussian_log_prob(a, mean, std).flatten(1).sum(-1))
        else:
            a = mean
            log_probs.append(torch.zeros(a.shape[0], device=a.device))
        chain.append(a)
    prediction = Prediction(x, m, a.to(dtype))
    if not record:
        return prediction, None
    trajectory = ActionTrajectory(
        context=context,
        rgb=torch.stack(xs, dim=1),
        value=torch.stack(ms, dim=1) if m is not None else None,
        actions=torch.stack(chain, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
        schedule=schedule,
    )
    return prediction, trajectory


@torch.no_grad()
def sample_actions_given_video(
    model: AIMTransformer,
    context: Context,
    video: Prediction,
    noise_actions: Tensor,
    schedule: ChunkSchedule,
    use_cache: bool = True,
) -> Tensor:
    """(B, chunk, A) actions denoised by the ODE from ``noise_actions`` when the future is given, not
    imagined: every action step reads ``video`` (clean x and m, noise level 0) as the steps after the
    last video step of :func:`sample_chunk` read the final video.

    What the action stream makes of other value maps than its own (the recorded ones, blank ones) is
    measured with it (``benchmarks.value_maps``)."""
    if schedule.action_noise:
        raise ValueError("sample_actions_given_video runs the ODE: give a schedule with action_noise=0.")
    dtype = context.obs_latents.dtype
    reader = _VideoReader(model, context, schedule, use_cache)
    a = noise_actions.float()
    for i in range(schedule.action_steps):
        _, a, _ = _action_step(reader, i, video.rgb, video.value, a, dtype, video_state=schedule.video_steps)
    return a.to(dtype)


def trajectory_log_probs(
    model: AIMTransformer, trajectory: ActionTrajectory, return_means: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """(B, Ka) per-step log-probabilities of a stored trajectory under the model's current weights.

    Differentiable with respect to the action stream's parameters that require gradients: the
    context and the stored video states are run again (frozen in Stage II, so they build no graph),
    then every action step on the stored a_k. Steps with std 0 give 0. With ``return_means`` also
    returns the (B, Ka, chunk, A) Gaussian means (for KL terms).
    """
    t = trajectory
    reader = _VideoReader(model, t.context, t.schedule, use_cache=True)
    log_probs, means = [], []
    for i in range(t.num_steps):
        state = t.schedule.video_state(i)
        m = t.value[:, state] if t.value is not None else None
        _, mean, std = _action_step(reader, i, t.rgb[:, state], m, t.actions[:, i], t.context.obs_latents.dtype)
        if std > 0:
            log_probs.append(gaussian_log_prob(t.actions[:, i + 1], mean, std).flatten(1).sum(-1))
        else:
            log_probs.append(mean.new_zeros(mean.shape[0]))
        means.append(mean)
    log_probs = torch.stack(log_probs, dim=1)
    if return_means:
        return log_probs, torch.stack(means, dim=1)
    return log_probs
