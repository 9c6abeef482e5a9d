"""Interaction events of an episode, found from per-step signals, and the next interaction region.

AIM's value maps (paper, section 5.2) mark where the robot should interact next:

- Pick: the contact points between the gripper and the object "when the gripper is in effective
  gripping contact with the target object". Read here as the first step of a firm grasp: every
  gripper pad touches the object while the gripper is closing.
- Place: the contact region between the grasped object and its support "when the object reaches a
  stable placement state", detected "with a small center-of-mass velocity threshold". Read here as
  the first step after the release (the gripper has opened and let go of the held object) from
  which the object's centre-of-mass speed stays below a threshold for a few steps.
- Tasks without a grasp (pushing, pressing, opening): the first gripper-object contact.

Nothing here calls a simulator: the caller extracts the signals (contact flags and points from
MuJoCo's `data.contact`, the object's position, the gripper command) and passes plain arrays.
Real arms without a contact API use `detect_gripper_events` (end-effector positions and the
gripper's open/closed state only).

All positions are (..., 3) in the world frame, metres; steps index the episode's frames from 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

EventKind = Literal["grasp", "place", "contact"]

SETTLE_SPEED = 0.05
"""Centre-of-mass speed (m/s) below which a released object counts as still (the place event).

MetaWorld's puck creeps at about 0.025 m/s once put down, so a smaller threshold misses its placement.
The one default of ``lerobot-aim-collect`` and ``lerobot-aim-annotate --source=contacts``."""

SETTLE_STEPS = 3
"""Consecutive still steps that confirm a placement."""


@dataclass(frozen=True)
class InteractionEvent:
    """One interaction of one arm.

    Attributes:
        step: frame index at which the interaction happens.
        kind: "grasp", "place" or "contact".
        points: (K, 3) world points of the interaction region, metres (K >= 1).
        arm: index of the arm that interacts (0 for single-arm robots).
    """

    step: int
    kind: EventKind
    points: np.ndarray
    arm: int = 0


def detect_grasp_place_events(
    gripper_closing: np.ndarray,
    pad_contacts: np.ndarray,
    object_position: np.ndarray,
    dt: float,
    gripper_contact_points: Sequence[np.ndarray] | None = None,
    support_contact_points: Sequence[np.ndarray] | None = None,
    object_half_height: float = 0.0,
    speed_threshold: float = SETTLE_SPEED,
    settle_steps: int = SETTLE_STEPS,
    arm: int = 0,
) -> list[InteractionEvent]:
    """Grasp and place events of one arm and one object (paper, section 5.2: pick and place rules).

    The episode is read as a cycle free -> held -> released -> free (so several pick-and-place
    cycles, or a re-grasp before the object settles, give several events):

    - grasp: first step at which the gripper is closing and all pads touch the object;
    - release: first later step at which the gripper is no longer closing and no pad touches the
      object any more (a gripper opens over several steps, holding the object still meanwhile);
    - place: first step after the release from which the object's centre-of-mass speed stays below
      ``speed_threshold`` for ``settle_steps`` steps (or until the episode ends). An object that
      never settles gives no place event.

    Args:
        gripper_closing: (T,) bool, the gripper is commanded to close (or is closed) at each step.
        pad_contacts: (T, P) bool, pad p touches the object at each step (P = 2 for a parallel
            gripper); (T,) is read as a single pad.
        object_position: (T, 3) the object's centre of mass.
        dt: time between consecutive steps, seconds (speeds are backward differences / dt).
        gripper_contact_points: optional per-step (K_t, 3) gripper-object contact points; the grasp
            region is those at the grasp step, or the object's centre if missing or empty.
        support_contact_points: optional per-step (K_t, 3) object-support contact points; the place
            region is those at the place step, or the object's bottom point (centre lowered by
            ``object_half_height`` along world z) if missing or empty.
        object_half_height: distance from the centre of mass down to the object's base, metres.
        speed_threshold: centre-of-mass speed below which the object counts as still, m/s.
        settle_steps: number of consecutive still steps that confirm a placement.
        arm: arm index stored in the events.

    Returns:
        Events in step order.
    """
    closing = np.asarray(gripper_closing, dtype=bool).reshape(-1)
    num_steps = len(closing)
    pads = np.asarray(pad_contacts, dtype=bool).reshape(num_steps, -1)
    position = np.asarray(object_position, dtype=np.float64).reshape(num_steps, 3)
    if dt <= 0 or settle_steps < 1:
        raise ValueError(f"dt must be > 0 and settle_steps >= 1, got dt={dt}, settle_steps={settle_steps}")
    for name, points in (("gripper", gripper_contact_points), ("support", support_contact_points)):
        if points is not None and len(points) != num_steps:
            raise ValueError(f"{name}_contact_points must have {num_steps} entries, got {len(points)}")

    firm_grasp = closing & pads.all(axis=1)
    speed = np.zeros(num_steps)
    speed[1:] = np.linalg.norm(np.diff(position, axis=0), axis=1) / dt
    still = speed < speed_threshold
    # settled[t]: the object is still at every step from t to t + settle_steps - 1 (or to the end).
    settled = np.array([still[t : t + settle_steps].all() for t in range(num_steps)], dtype=bool)

    events = []
    state = "free"
    for t in range(num_steps):
        if state != "held" and firm_grasp[t]:
            grasp_points = _points_at(gripper_contact_points, t, fallback=position[t])
            events.append(InteractionEvent(t, "grasp", grasp_points, arm))
            state = "held"
        elif state == "held" and not closing[t] and not pads[t].any():
            state = "released"
        elif state == "released" and settled[t]:
            bottom = position[t] - np.array([0.0, 0.0, object_half_height])
            events.append(InteractionEvent(t, "place", _points_at(support_contact_points, t, bottom), arm))
            state = "free"
    return events


def detect_first_contact(contact_points: Sequence[np.ndarray], arm: int = 0) -> list[InteractionEvent]:
    """The first gripper-object contact, for tasks without a grasp (paper, section 5.2: other tasks).

    Args:
        contact_points: per step, the (K_t, 3) gripper-object contact points (K_t = 0: no contact).
        arm: arm index stored in the event.

    Returns:
        One "contact" event at the first step with a contact, or an empty list.
    """
    for t, points in enumerate(contact_points):
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if len(points):
            return [InteractionEvent(t, "contact", points, arm)]
    return []


def detect_contact_events(
    gripper_closing: np.ndarray,
    pad_contacts: np.ndarray,
    object_position: np.ndarray,
    dt: float,
    gripper_contact_points: Sequence[np.ndarray] | None = None,
    support_contact_points: Sequence[np.ndarray] | None = None,
    object_half_height: float = 0.0,
    speed_threshold: float = SETTLE_SPEED,
    settle_steps: int = SETTLE_STEPS,
    arm: int = 0,
) -> list[InteractionEvent]:
    """THE rule for simulator contact signals (``DESIGN.md``, "Value maps (ASVM)"), for one arm.

    Grasps and placements (:func:`detect_grasp_place_events`, same arguments); an arm that never
    grasps gets its first contact instead: the first step with gripper-object contact points
    (:func:`detect_first_contact`), or, without contact points, the object's centre at the first
    step a pad touches it. ``lerobot-aim-collect`` and ``lerobot-aim-annotate --source=contacts``
    both call this, so that they find the same events in the same signals.

    Returns:
        Events in step order.
    """
    events = detect_grasp_place_events(
        gripper_closing,
        pad_contacts,
        object_position,
        dt,
        gripper_contact_points=gripper_contact_points,
        support_contact_points=support_contact_points,
        object_half_height=object_half_height,
        speed_threshold=speed_threshold,
        settle_steps=settle_steps,
        arm=arm,
    )
    if any(event.kind == "grasp" for event in events):
        return events
    first = detect_first_contact(gripper_contact_points, arm) if gripper_contact_points is not None else []
    if not first:
        num_steps = len(np.asarray(gripper_closing).reshape(-1))
        touching = np.flatnonzero(np.asarray(pad_contacts, dtype=bool).reshape(num_steps, -1).any(axis=1))
        if len(touching):
            step = int(touching[0])
            position = np.asarray(object_position, dtype=np.float64).reshape(num_steps, 3)
            first = [InteractionEvent(step, "contact", position[step][None].copy(), arm)]
    return sorted(events + first, key=lambda event: event.step)


def detect_gripper_events(ee_position: np.ndarray, gripper_closed: np.ndarray) -> list[InteractionEvent]:
    """Grasp and place events from end-effector poses and gripper state alone (real arms).

    Without contacts, the grasp region is the tool-centre point where the gripper closes and the
    place region is the tool-centre point where it opens again. A gripper that starts closed gives
    no grasp; a closing on nothing cannot be told from a grasp.

    Args:
        ee_position: (T, 3) tool-centre positions of one arm, or (T, A, 3) for A arms.
        gripper_closed: (T,) or (T, A) bool, the gripper is closed (or commanded closed); threshold
            a continuous opening beforehand.

    Returns:
        Events of all arms, sorted by step then arm; "grasp" at each open -> closed step and "place"
        at each closed -> open step, each with the (1, 3) tool-centre point of that step.
    """
    position = np.asarray(ee_position, dtype=np.float64)
    closed = np.asarray(gripper_closed, dtype=bool)
    if position.ndim == 2:
        position, closed = position[:, None], closed.reshape(-1, 1)
    if position.shape[:2] != closed.shape or position.shape[2] != 3:
        raise ValueError(
            f"ee_position (T, A, 3) and gripper_closed (T, A) disagree: {position.shape} vs {closed.shape}"
        )
    change = np.diff(closed.astype(np.int8), axis=0)  # (T - 1, A): +1 closes, -1 opens at step t + 1
    steps, arms = np.nonzero(change)
    return [
        InteractionEvent(
            int(t) + 1, "grasp" if change[t, a] > 0 else "place", position[t + 1, a][None].copy(), int(a)
        )
        for t, a in zip(steps, arms, strict=True)
    ]


def next_interaction_targets(
    num_steps: int,
    events: Sequence[InteractionEvent],
    after_last: Literal["last", "empty"] = "last",
) -> list[np.ndarray]:
    """For every step, the world points of the next interaction region of every arm.

    At step t an arm's target is its first event with ``event.step >= t``: before (and at) a grasp
    the grasp region, after it the placement region (paper, section 5.2). The targets of all arms
    are concatenated, so a bimanual map shows both arms' regions.

    After an arm's last event, ``after_last="last"`` (default) keeps showing that last region: the
    object stays where it was placed (or pressed), and the map keeps marking the goal of the task
    instead of turning blank; ``"empty"`` gives that arm no points.

    Args:
        num_steps: episode length T.
        events: events of any arms, in any order.
        after_last: "last" or "empty", see above.

    Returns:
        T arrays of shape (K_t, 3) (K_t = 0 where no arm has a target).
    """
    if after_last not in ("last", "empty"):
        raise ValueError(f"after_last must be 'last' or 'empty', got {after_last!r}")
    per_step: list[list[np.ndarray]] = [[] for _ in range(num_steps)]
    for arm in sorted({event.arm for event in events}):
        arm_events = sorted((e for e in events if e.arm == arm), key=lambda e: e.step)
        steps = np.array([event.step for event in arm_events])
        next_index = np.searchsorted(steps, np.arange(num_steps), side="left")
        for t, index in enumerate(next_index):
            if index < len(arm_events):
                per_step[t].append(arm_events[index].points)
            elif after_last == "last":
                per_step[t].append(arm_events[-1].points)
    return [np.concatenate(points, axis=0) if points else np.zeros((0, 3)) for points in per_step]


def _points_at(points: Sequence[np.ndarray] | None, step: int, fallback: np.ndarray) -> np.ndarray:
    """(K, 3) points given for ``step``, or the (1, 3) fallback point when there are none."""
    if points is not None:
        at_step = np.asarray(points[step], dtype=np.float64).reshape(-1, 3)
        if len(at_step):
            return at_step
    return np.asarray(fallback, dtype=np.float64).reshape(1, 3)
