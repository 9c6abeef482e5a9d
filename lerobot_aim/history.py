"""The history AIM plans from: packed frames and executed actions, by env step.

AIM's context at env step ``t`` has the layout of a training sample (``observation_delta_indices``
and the past part of ``action_delta_indices``): the packed frames of steps
``t - n_past, t - n_past + frame_stride, ..., t`` and the ``n_past`` actions executed at steps
``t - n_past ... t - 1``, where ``n_past = config.num_past_actions``. One :class:`ContextHistory`
keeps both, whoever drives the steps: ``AIMPolicy.select_action`` in a local loop (lerobot-eval,
lerobot-rollout), one frame and one action per call, or the policy server, which records the frames
and executed actions its robot client reports by their env step.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ContextHistory:
    """Frames and executed actions of one episode, by env step, and the context at a step.

    ``step`` is the env step of the current observation: :meth:`record_frame` and
    :meth:`record_action` write there unless told another step, :meth:`context` reads there, and
    :meth:`next_step` moves on once the step's action has run.

    Where the episode has no frame for a step (before its first frame, or a step a client never
    sent), the nearest earlier frame stands in (the first one before the start, as a training
    sample repeats its first frame); a step with no recorded action has a zero action, as before
    the start.
    """

    def __init__(self, num_past_actions: int, frame_stride: int, action_dim: int):
        self.num_past_actions = num_past_actions
        self.frame_stride = frame_stride
        self.action_dim = action_dim
        self.reset()

    def reset(self) -> None:
        """Forget the episode: the next frame is that of step 0."""
        self.step = 0
        self._frames: dict[int, Tensor] = {}  # env step -> (B, 3, H, W) packed canvas in [-1, 1]
        self._actions: dict[int, Tensor] = {}  # env step -> (B, action_dim) normalised action run there

    def record_frame(self, frame: Tensor, step: int | None = None) -> None:
        """Keep ``frame``, the (B, 3, H, W) packed canvas in [-1, 1] observed at ``step`` (default: the
        current step); a later frame of the same step replaces it."""
        self._frames[self.step if step is None else step] = frame

    def record_action(self, action: Tensor, step: int | None = None) -> None:
        """Keep ``action``, the (B, action_dim) normalised action executed at ``step`` (default: the
        current step)."""
        self._actions[self.step if step is None else step] = action

    def next_step(self) -> None:
        """The current step's action has run: the next observation is of the following step."""
        self.step += 1

    def context(self, step: int | None = None) -> tuple[Tensor, Tensor]:
        """The context at ``step`` (default: the current step), which must have a frame.

        Returns the frames (B, 1 + n_past // frame_stride, 3, H, W) of steps ``step - n_past`` to
        ``step`` every ``frame_stride``, oldest first, and the past actions (B, n_past, action_dim)
        of steps ``step - n_past`` to ``step - 1``. What is older than this window is forgotten: a
        later context never reads it.
        """
        step = self.step if step is None else step
        frame_steps, action_steps = self.window_steps(step)
        first = step - self.num_past_actions
        current = self._frames[step]
        frames = torch.stack([self._frame_at(s) for s in frame_steps], dim=1)
        batch_size = current.shape[0]
        zeros = torch.zeros(batch_size, self.action_dim, device=current.device)
        past = [self._actions.get(s, zeros) for s in action_steps]
        past_actions = (
            torch.stack(past, dim=1)
            if past
            else torch.zeros(batch_size, 0, self.action_dim, device=current.device)
        )
        # Forget what no later context reads: frames before the one standing in for `first`, older actions.
        anchor = max((s for s in self._frames if s <= first), default=first)
        self._frames = {s: f for s, f in self._frames.items() if s >= anchor}
        self._actions = {s: a for s, a in self._actions.items() if s >= first}
        return frames, past_actions

    def window_steps(self, step: int | None = None) -> tuple[list[int], list[int]]:
        """The env steps of the context's frames and of its past actions at ``step`` (default: the
        current step), oldest first."""
        step = self.step if step is None else step
        first = step - self.num_past_actions
        return list(range(first, step + 1, self.frame_stride)), list(range(first, step))

    def _frame_at(self, step: int) -> Tensor:
        earlier = [s for s in self._frames if s <= step]
        return self._frames[max(earlier) if earlier else min(self._frames)]
