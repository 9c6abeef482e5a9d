"""Stage II rollouts: G envs per initial state, stochastic action chunks with their log-probabilities.

The loop is LeRobot's ``lerobot_eval.rollout`` (same observation path: ``preprocess_observation`` ->
task string -> env preprocessor -> policy preprocessor; same action path: policy postprocessor -> env
postprocessor -> ``env.step``; latched ``done``; ``is_success`` read from each env's own info, its
``final_info`` when it just ended), with the policy's
``select_action`` replaced by :class:`StochasticActor`: it keeps AIMPolicy's queue, frame and
past-action history, but plans each chunk with the flow-SDE actions of the one sampler
(:mod:`lerobot_aim.model.sampling`) and records the chunk's trajectory, and it decodes the frozen
value head's predicted maps for the dense reward.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from lerobot.envs import preprocess_observation
from lerobot.envs.utils import NEW_ROLLOUT_OPTION
from lerobot.utils.constants import ACTION
from torch import Tensor

from lerobot_aim.model.mot import Context, Prediction
from lerobot_aim.model.sampling import ActionTrajectory, ChunkSchedule, sample_chunk
from lerobot_aim.modeling_aim import finite_actions
from lerobot_aim.rl.rewards import (
    dense_reward,
    env_info_at,
    episode_returns,
    read_env_geometry,
    value_frame_index,
)

logger = logging.getLogger(__name__)


@dataclass
class RewardSpec:
    lambda_d: float = 1.0
    lambda_s: float = 1.0
    views: str = "max"  # "max" over views or "head"
    dense_aggregation: str = "mean"  # "mean" or "sum" over the episode
    camera_sources: dict[str, str] = field(default_factory=dict)  # policy camera -> env camera


class StochasticActor:
    """AIMPolicy's acting loop with flow-SDE chunks (uses the policy's history and queue)."""

    def __init__(
        self,
        policy,
        sde_noise: float,
        decode_value_maps: bool = True,
        store_device: str | torch.device = "cpu",
    ):
        self.policy = policy
        self.sde_noise = sde_noise
        self.decode_value_maps = decode_value_maps and policy.model.value is not None
        self.store_device = torch.device(store_device)
        self.reset()

    def reset(self) -> None:
        self.policy.reset()
        self.trajectories: list[ActionTrajectory] = []
        self.chunk_steps: list[int] = []  # env step at which each recorded chunk was planned
        self.value_canvas: Tensor | None = None  # (B, F, 3, H, W) of the current chunk
        self.last_prediction: Prediction | None = None
        self.step_in_chunk = 0
        self.env_step = 0

    @torch.no_grad()
    def predict_chunk(self, batch: dict) -> tuple[Tensor, ActionTrajectory]:
        """As AIMPolicy.predict_action_chunk, with the SDE for the actions."""
        policy = self.policy
        context, noise = policy.chunk_inputs(batch)
        # Clones: inputs computed under another caller's inference_mode (e.g. the text encoder's
        # cache after lerobot's eval) could not be saved for backward when log-probs are recomputed.
        context = Context(*(t.clone() if t is not None else None for t in vars(context).values()))
        # The context is encoded whole, not through the cross-step store (per_instant): the update
        # recomputes log-probs from the stored context encoded whole, so both come from one computation.
        with policy.compute_precision():
            pred, trajectory = sample_chunk(
                policy.model,
                context,
                noise,
                ChunkSchedule.of(policy.config, action_noise=self.sde_noise),
                use_cache=policy.config.use_context_cache,
                record=True,
            )
        policy.remember(pred, context)
        self.last_prediction = pred
        return finite_actions(pred.actions.float()), trajectory

    def _plan(self, batch: dict) -> Tensor:
        chunk, trajectory = self.predict_chunk(batch)
        self.trajectories.append(trajectory.to(self.store_device))
        return chunk

    @torch.no_grad()
    def select_action(self, batch: dict) -> Tensor:
        action, planned = self.policy.next_action(batch, self._plan)
        if planned:
            self.chunk_steps.append(self.env_step)
            self.step_in_chunk = 0
            if self.decode_value_maps:
                self.value_canvas = self.policy.decode_value_maps().cpu()
        else:
            self.step_in_chunk += 1
        self.env_step += 1
        return action

    def current_value_map(self, env_index: int) -> Tensor | None:
        """(3, H, W) predicted value canvas covering the action just taken by ``env_index``."""
        if self.value_canvas is None:
            return None
        frame = value_frame_index(self.step_in_chunk, self.policy.config.frame_stride, self.value_canvas.shape[1])
        return self.value_canvas[env_index, frame]


@dataclass
class RolloutResult:
    """One batched rollout of N envs (T steps at most) and its C planned chunks."""

    dense: Tensor  # (N, T) dense reward per step (0 where unavailable)
    success: Tensor  # (N, T) bool
    env_reward: Tensor  # (N, T) the env's own reward (logged only)
    valid: Tensor  # (N, T) bool: the step belongs to the episode (up to and including its end)
    has_geometry: Tensor  # (N, T) bool: dense reward could be computed
    trajectories: ActionTrajectory  # C * N chunks, chunk-major (chunk c of env i at c * N + i)
    chunk_env: Tensor  # (C * N,) env index of each chunk
    chunk_valid: Tensor  # (C * N,) bool: env's episode was still running when the chunk was planned
    returns: Tensor  # (N,) episode returns
    seeds: list[int] | None = None

    @property
    def num_envs(self) -> int:
        return self.dense.shape[0]

    @property
    def episode_success(self) -> Tensor:
        return (self.success & self.valid).any(-1)

    @property
    def episode_length(self) -> Tensor:
        return self.valid.sum(-1)


def _task_strings(env: gym.vector.VectorEnv) -> list[str]:
    try:
        return list(env.call("task_description"))
    except (AttributeError, NotImplementedError):
        try:
            return list(env.call("task"))
        except (AttributeError, NotImplementedError):
            return [""] * env.num_envs


def _image_sizes(raw_observation: dict) -> dict[str, tuple[int, int]]:
    pixels = raw_observation.get("pixels")
    if isinstance(pixels, dict):
        return {cam: tuple(img.shape[1:3]) for cam, img in pixels.items()}
    return {}


def rollout(
    env: gym.vector.VectorEnv,
    actor: StochasticActor,
    env_preprocessor,
    env_postprocessor,
    preprocessor,
    postprocessor,
    reward: RewardSpec,
    seeds: list[int] | None = None,
    max_steps: int | None = None,
) -> RolloutResult:
    """Run N envs to the end of their episodes with SDE chunks; rewards per step and per episode."""
    policy = actor.policy
    cfg = policy.config
    actor.reset()
    observation, info = env.reset(seed=seeds, options={NEW_ROLLOUT_OPTION: True})
    num_envs = env.num_envs
    if max_steps is None:
        max_steps = int(env.call("_max_episode_steps")[0])
    done = np.zeros(num_envs, dtype=bool)
    dense_steps, success_steps, reward_steps, valid_steps, geometry_steps = [], [], [], [], []
    chunk_alive: list[np.ndarray] = []
    step = 0
    while not np.all(done) and step < max_steps:
        image_hw = _image_sizes(observation)
        batch = preprocess_observation(observation)
        batch["task"] = _task_strings(env)
        batch = env_preprocessor(batch)
        batch = preprocessor(batch)
        num_chunks = len(actor.trajectories)
        action = actor.select_action(batch)
        if len(actor.trajectories) > num_chunks:
            chunk_alive.append(~done.copy())
        action = postprocessor(action)
        action = env_postprocessor({ACTION: action})[ACTION]
        action_numpy = action.to("cpu").numpy()
        observation, env_reward, terminated, truncated, info = env.step(action_numpy)

        successes = np.zeros(num_envs, dtype=bool)
        dense = np.zeros(num_envs, dtype=np.float32)
        has_geometry = np.zeros(num_envs, dtype=bool)
        for i in range(num_envs):
            if done[i]:
                continue
            info_i = env_info_at(info, i)  # the finished step's own info for an env that just ended
            successes[i] = bool(info_i.get("is_success", False))
            geometry = read_env_geometry(info_i, image_hw)
            has_geometry[i] = geometry is not None
            value_map = actor.current_value_map(i)
            if geometry is not None and value_map is not None:
                dense[i] = dense_reward(
                    value_map,
                    geometry,
                    cameras=list(cfg.cameras),
                    head_hw=tuple(cfg.image_size),
                    views=reward.views,
                    camera_sources=reward.camera_sources,
                )
        valid_steps.append(~done.copy())
        done = done | terminated | truncated
        if step + 1 == max_steps:
            done[:] = True
        dense_steps.append(dense)
        success_steps.append(successes)
        reward_steps.append(np.asarray(env_reward, dtype=np.float32))
        geometry_steps.append(has_geometry)
        step += 1

    def stack(rows, dtype):
        return torch.as_tensor(np.stack(rows, axis=1), dtype=dtype)

    has_geometry_t = stack(geometry_steps, torch.bool)
    if actor.decode_value_maps and not bool(has_geometry_t.any()):
        warnings.warn(
            "The env's info has no camera calibration or end-effector position (see "
            "lerobot_aim.rl.rewards.read_env_geometry): the dense reward is 0, training on the sparse "
            "reward only.",
            RuntimeWarning,
            stacklevel=2,
        )
    dense_t = stack(dense_steps, torch.float32)
    success_t = stack(success_steps, torch.bool)
    valid_t = stack(valid_steps, torch.bool)
    returns = episode_returns(
        dense_t, success_t, valid_t, reward.lambda_d, reward.lambda_s, reward.dense_aggregation
    )
    trajectories = ActionTrajectory.cat(actor.trajectories)
    num_chunks = len(actor.trajectories)
    return RolloutResult(
        dense=dense_t,
        success=success_t,
        env_reward=stack(reward_steps, torch.float32),
        valid=valid_t,
        has_geometry=has_geometry_t,
        trajectories=trajectories,
        chunk_env=torch.arange(num_envs).repeat(num_chunks),
        chunk_valid=torch.as_tensor(np.concatenate(chunk_alive), dtype=torch.bool),
        returns=returns,
        seeds=list(seeds) if seeds is not None else None,
    )


def rollout_with_restarts(
    make_vec_env,
    env_holder: dict[str, Any],
    max_restarts: int,
    **rollout_kwargs,
) -> RolloutResult:
    """:func:`rollout` on ``env_holder["env"]``; if the env (or one of its workers) raises, log it,
    close it, build a fresh one with ``make_vec_env()`` and run the rollout again (up to
    ``max_restarts`` times), instead of ending the training run."""
    for attempt in range(max_restarts + 1):
        try:
            return rollout(env_holder["env"], **rollout_kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:
            if attempt == max_restarts:
                raise
            logger.exception(
                "Env rollout failed (%s); recreating the env (restart %d of %d).",
                f"{type(err).__name__}: {err}",
                attempt + 1,
                max_restarts,
            )
            try:
                env_holder["env"].close()
            except Exception:  # a crashed worker may not close cleanly
                logger.warning("Closing the crashed env failed; continuing with a new one.", exc_info=True)
            env_holder["env"] = make_vec_env()
            env_holder["restarts"] = env_holder.get("restarts", 0) + 1
    raise AssertionError("unreachable")
