import numpy as np
import pytest

from lerobot_aim.asvm import (
    SETTLE_SPEED,
    InteractionEvent,
    detect_contact_events,
    detect_first_contact,
    detect_grasp_place_events,
    detect_gripper_events,
    next_interaction_targets,
)

DT = 0.05
NUM_STEPS = 60
START = np.array([0.1, 0.6, 0.05])
DROP = np.array([0.3, 0.7, 0.15])
END = np.array([0.3, 0.7, 0.05])


def _pick_and_drop():
    """Synthetic pick-and-place signals of one arm (T = 60 steps of 50 ms).

    0-9 approach, 10 the gripper starts closing, 12 one pad touches, 14 both pads (grasp),
    15-29 the object is carried to DROP, 30 the gripper starts opening while the pads still hold
    the object still in the air, 33 the pads let go, 33-37 the object falls, from 38 on it rests.
    """
    closing = np.zeros(NUM_STEPS, dtype=bool)
    closing[10:30] = True
    pads = np.zeros((NUM_STEPS, 2), dtype=bool)
    pads[12:33, 0] = True
    pads[14:33, 1] = True
    position = np.tile(START, (NUM_STEPS, 1))
    position[15:30] = START + np.linspace(0, 1, 15)[:, None] * (DROP - START)
    position[30:33] = DROP
    position[33:38] = DROP + np.linspace(0, 1, 6)[1:, None] * (END - DROP)
    position[38:] = END
    grasp_points = [np.zeros((0, 3)) for _ in range(NUM_STEPS)]
    for t in range(12, 33):
        grasp_points[t] = position[t] + np.array([[0.0, -0.02, 0.0], [0.0, 0.02, 0.0]])
    return closing, pads, position, grasp_points


def test_grasp_then_place_after_settling():
    closing, pads, position, grasp_points = _pick_and_drop()
    events = detect_grasp_place_events(
        closing, pads, position, DT, gripper_contact_points=grasp_points, object_half_height=0.05
    )
    assert [(event.kind, event.step, event.arm) for event in events] == [("grasp", 14, 0), ("place", 38, 0)]
    grasp, place = events
    np.testing.assert_allclose(grasp.points, grasp_points[14])
    # No support contacts given: the object's bottom point, once it rests.
    np.testing.assert_allclose(place.points, [END - [0, 0, 0.05]])


def test_place_uses_support_contacts_and_speed_threshold():
    closing, pads, position, _ = _pick_and_drop()
    support = [np.zeros((0, 3)) for _ in range(NUM_STEPS)]
    for t in range(38, NUM_STEPS):
        support[t] = END + np.array([[0.01, 0.0, -0.05], [-0.01, 0.0, -0.05]])
    events = detect_grasp_place_events(closing, pads, position, DT, support_contact_points=support)
    assert [event.kind for event in events] == ["grasp", "place"]
    np.testing.assert_allclose(events[1].points, support[38])
    # Without contact points the grasp region is the object's centre.
    np.testing.assert_allclose(events[0].points, [START])
    # The fall moves 2 cm per step (0.4 m/s): a threshold above that takes the first step after the
    # release (33) as settled.
    fast = detect_grasp_place_events(closing, pads, position, DT, speed_threshold=1.0)
    assert [(event.kind, event.step) for event in fast] == [("grasp", 14), ("place", 34)]


def test_no_grasp_without_both_pads_and_no_place_without_settling():
    closing, pads, position, _ = _pick_and_drop()
    one_pad = pads.copy()
    one_pad[:, 1] = False
    assert detect_grasp_place_events(closing, one_pad, position, DT) == []
    moving = position.copy()
    moving[38:, 0] += 0.01 * np.arange(1, NUM_STEPS - 37)  # keeps sliding at 0.2 m/s
    assert [event.kind for event in detect_grasp_place_events(closing, pads, moving, DT)] == ["grasp"]


def test_two_pick_and_place_cycles():
    closing, pads, position, _ = _pick_and_drop()
    closing = np.concatenate([closing, closing])
    pads = np.concatenate([pads, pads])
    position = np.concatenate([position, position])
    events = detect_grasp_place_events(closing, pads, position, DT, settle_steps=5, arm=1)
    assert [(event.kind, event.step, event.arm) for event in events] == [
        ("grasp", 14, 1),
        ("place", 38, 1),
        ("grasp", 74, 1),
        ("place", 98, 1),
    ]


def test_first_contact():
    contacts = [np.zeros((0, 3))] * 5 + [np.array([[0.1, 0.2, 0.3]]), np.ones((2, 3))]
    (event,) = detect_first_contact(contacts)
    assert (event.kind, event.step, event.arm) == ("contact", 5, 0)
    np.testing.assert_allclose(event.points, [[0.1, 0.2, 0.3]])
    assert detect_first_contact([np.zeros((0, 3))] * 3) == []


def test_contact_events_one_rule():
    """Grasp and place when there is a grasp; else the first contact: its points, else the object's
    centre at the first pad contact."""
    closing, pads, position, grasp_points = _pick_and_drop()
    with_grasp = detect_contact_events(closing, pads, position, DT, gripper_contact_points=grasp_points)
    assert [(e.kind, e.step) for e in with_grasp] == [("grasp", 14), ("place", 38)]
    never_closed = np.zeros(NUM_STEPS, dtype=bool)
    (contact,) = detect_contact_events(never_closed, pads, position, DT, gripper_contact_points=grasp_points)
    assert (contact.kind, contact.step) == ("contact", 12)
    np.testing.assert_allclose(contact.points, grasp_points[12])
    (from_pads,) = detect_contact_events(never_closed, pads, position, DT)
    assert (from_pads.kind, from_pads.step) == ("contact", 12)
    np.testing.assert_allclose(from_pads.points, [position[12]])
    assert detect_contact_events(never_closed, np.zeros_like(pads), position, DT) == []
    # MetaWorld's puck creeps at about 0.025 m/s once put down: the one default counts it as still.
    assert SETTLE_SPEED > 0.025


def test_gripper_events_of_two_arms():
    num_steps = 40
    ee = np.zeros((num_steps, 2, 3))
    ee[:, 0, 0] = np.arange(num_steps)  # arm 0 at x = t
    ee[:, 1, 1] = np.arange(num_steps)  # arm 1 at y = t
    closed = np.zeros((num_steps, 2), dtype=bool)
    closed[5:20, 0] = True
    closed[10:30, 1] = True
    events = detect_gripper_events(ee, closed)
    assert [(event.step, event.kind, event.arm) for event in events] == [
        (5, "grasp", 0),
        (10, "grasp", 1),
        (20, "place", 0),
        (30, "place", 1),
    ]
    np.testing.assert_allclose(events[0].points, [[5.0, 0.0, 0.0]])
    np.testing.assert_allclose(events[3].points, [[0.0, 30.0, 0.0]])
    # A single arm may be given without the arm axis; a gripper closed from the start gives no grasp.
    single = detect_gripper_events(ee[:, 0], np.arange(num_steps) < 8)
    assert [(event.step, event.kind) for event in single] == [(8, "place")]
    with pytest.raises(ValueError, match="disagree"):
        detect_gripper_events(ee, closed[:, :1])


def test_next_interaction_targets_single_arm():
    grasp = InteractionEvent(14, "grasp", np.array([[1.0, 0.0, 0.0], [1.0, 0.1, 0.0]]))
    place = InteractionEvent(38, "place", np.array([[2.0, 0.0, 0.0]]))
    targets = next_interaction_targets(NUM_STEPS, [place, grasp])
    assert len(targets) == NUM_STEPS
    assert all(np.array_equal(targets[t], grasp.points) for t in range(15))  # up to the grasp step
    assert all(np.array_equal(targets[t], place.points) for t in range(15, NUM_STEPS))  # kept after it
    empty_after = next_interaction_targets(NUM_STEPS, [grasp, place], after_last="empty")
    assert np.array_equal(empty_after[38], place.points) and empty_after[39].shape == (0, 3)
    assert all(target.shape == (0, 3) for target in next_interaction_targets(5, []))


def test_next_interaction_targets_two_arms():
    events = detect_gripper_events(
        np.stack([np.ones((40, 3)), 2 * np.ones((40, 3))], axis=1),
        np.stack([(np.arange(40) >= 5) & (np.arange(40) < 20), np.arange(40) >= 10], axis=1),
    )
    targets = next_interaction_targets(40, events, after_last="empty")
    assert targets[0].shape == (2, 3)  # both arms' next regions in one map
    np.testing.assert_allclose(targets[0], [[1, 1, 1], [2, 2, 2]])
    assert targets[15].shape == (1, 3)  # arm 1 has no event after its grasp at step 10
    assert targets[25].shape == (0, 3)
