"""A robot client's episode as the policy server sees it, so that a served AIM plans from the context
a local ``select_action`` loop would give it (frames at the configured stride, the actions executed).

LeRobot's async protocol carries observations (``TimedObservation``: the robot's raw observation, a
``timestep``, ``must_go``) and action chunks (one ``TimedAction`` per step); the env step of a frame
and the actions the robot ran are left implicit. What the server gets depends on the client:

- ``lerobot-aim-robot-client`` sends one observation per env step, labelled with that step (the
  number of actions the robot has run), plus two entries: :data:`HISTORY_ONLY` (True when the server
  should only record it: the client's queue still holds enough actions) and
  :data:`EXECUTED_ACTIONS` ({env step: the action the robot ran there, as it ran it} for the steps
  since its last observation). The served policy then sees exactly what ``select_action`` sees.
- LeRobot's own ``robot_client`` labels an observation with the timestep of the last action it ran
  (0 before any), sends observations only while its queue is at most ``chunk_size_threshold`` full,
  and reports no action. Such an observation is taken as the frame of the step after that action;
  the action the server sent for a step as the one executed (the client may have blended overlapping
  chunks with its ``aggregate_fn``); a step it never sent a frame for gets the nearest earlier frame.
"""

import threading
from collections.abc import Callable

import torch
from lerobot.async_inference.helpers import TimedObservation
from torch import Tensor

from lerobot_aim.history import ContextHistory

# Entries lerobot-aim-robot-client adds to the raw observation dict of every TimedObservation.
HISTORY_ONLY = "aim.history_only"  # bool: record the observation, plan nothing from it
EXECUTED_ACTIONS = "aim.executed_actions"  # {env step: (action_dim,) tensor the robot ran at that step}


class ServedEpisode:
    """Observations and sent action chunks of one client session, by env step.

    ``receive`` files each observation (kept raw; turned into a frame only when a context reads it),
    ``sent`` each chunk the server answers with, and ``prepare_history`` writes into the policy's
    :class:`ContextHistory` what its context at a step reads. ``window`` bounds what is kept: the
    steps that far behind the newest observation are forgotten.
    """

    def __init__(self, window: int):
        self.window = window
        self._lock = threading.Lock()  # observations arrive while a chunk is being planned
        self._observations: dict[int, TimedObservation] = {}  # env step -> its latest raw observation
        self._executed: dict[int, Tensor] = {}  # env step -> (A,) action the client ran there, as sent
        # env step -> [((A,) action as sent, (1, A) normalised action)], one entry per chunk, oldest first
        self._sent: dict[int, list[tuple[Tensor, Tensor]]] = {}

    def receive(self, observation: TimedObservation) -> int:
        """File ``observation``; returns its env step."""
        raw = observation.get_observation()
        with self._lock:
            label = observation.get_timestep()
            # lerobot-aim-robot-client labels with the env step; LeRobot's client with the last action
            # it ran, if it ran one.
            ran_label = HISTORY_ONLY not in raw and label in self._sent
            step = label + 1 if ran_label else label
            self._observations[step] = observation
            for executed_step, action in raw.get(EXECUTED_ACTIONS, {}).items():
                self._executed[int(executed_step)] = torch.as_tensor(action, dtype=torch.float32).flatten()
            self._forget(before=max(self._observations) - self.window)
        return step

    def sent(self, step: int, actions: Tensor, normalised: Tensor) -> None:
        """File a chunk planned at ``step``: ``actions`` (n, A) as sent to the robot, ``normalised``
        (1, n, A) as the policy gave them."""
        with self._lock:
            for i, action in enumerate(actions):
                self._sent.setdefault(step + i, []).append((action, normalised[:, i]))

    def prepare_history(
        self,
        history: ContextHistory,
        step: int,
        frame_of: Callable[[TimedObservation], Tensor],
        normalise: Callable[[Tensor], Tensor],
    ) -> None:
        """Make ``step`` the current step of ``history``, with the frames and executed actions of the
        steps before it that its context reads (the frame of ``step`` itself comes with the batch).

        ``frame_of`` turns a raw observation into its (1, 3, H, W) packed frame, ``normalise`` an
        (A,) action as the robot ran it into the policy's (1, A) normalised action.
        """
        first = step - history.num_past_actions
        with self._lock:
            anchor = max((s for s in self._observations if s <= first), default=first)
            observations = {s: o for s, o in self._observations.items() if anchor <= s < step}
            for s in observations:
                del self._observations[s]  # the history keeps their frames from now on
            executed = {s: (self._executed.get(s), list(self._sent.get(s, []))) for s in range(first, step)}
        for s, observation in sorted(observations.items()):
            history.record_frame(frame_of(observation), s)
        for s, (reported, sent) in executed.items():
            if (action := _executed_action(reported, sent, normalise)) is not None:
                history.record_action(action, s)
        history.step = step

    def _forget(self, before: int) -> None:
        for steps in (self._observations, self._executed, self._sent):
            for s in [s for s in steps if s < before]:
                del steps[s]


def _executed_action(
    reported: Tensor | None, sent: list[tuple[Tensor, Tensor]], normalise: Callable[[Tensor], Tensor]
) -> Tensor | None:
    """The normalised action run at a step: the sent one the client reports running (bit for bit the
    policy's own), else its report normalised (a blend of chunks), else the last one sent (LeRobot's
    client reports nothing); None when nothing is known (a zero action stands in)."""
    if reported is None:
        return sent[-1][1] if sent else None
    for as_sent, normalised in reversed(sent):
        if torch.equal(as_sent, reported):
            return normalised
    return normalise(reported)
