"""Contact signals of a MetaWorld scene: which geoms are the gripper, its pads, the robot and the objects,
and the contacts between them at a step (what value maps are made from).

The gripper is the hand, its fingers and the wrist link above them (which pushes doors, windows and
levers); objects are the movable bodies that are not the robot (MetaWorld's fixed furniture is not
one). The main object is the object body nearest to MetaWorld's main-object position.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

# Contact points reported per step are padded with NaN (or cut) to this many.
MAX_CONTACT_POINTS = 8
# Gripper geoms of the Sawyer in MetaWorld, per side (pad and claw).
LEFT_GRIPPER_GEOMS = ("leftpad_geom", "leftclaw_it")
RIGHT_GRIPPER_GEOMS = ("rightpad_geom", "rightclaw_it")
# The Sawyer's wrist link, parent of the `hand` body.
WRIST_BODY = "right_hand"


@dataclass
class ContactGeoms:
    """Per geom of a MetaWorld model: robot, gripper, finger side, movable object (see module doc)."""

    robot: np.ndarray  # (ngeom,) bool: part of the robot
    gripper: np.ndarray  # (ngeom,) bool: hand, fingers or wrist link
    pad_side: np.ndarray  # (ngeom,) int: 0 left finger, 1 right finger, -1 neither
    object: np.ndarray  # (ngeom,) bool: of a movable body that is not the robot
    object_ids: np.ndarray  # ids of the object geoms

    @classmethod
    def of(cls, model) -> "ContactGeoms":
        """Classify the geoms of ``model`` (a MetaWorld Sawyer scene)."""
        parent = model.body_parentid
        hand = model.body("hand").id
        robot_root = model.body_rootid[hand]
        wrist = parent[hand] if model.body(parent[hand]).name == WRIST_BODY else hand

        def in_subtree(body: int, root: int) -> bool:
            while body != 0:
                if body == root:
                    return True
                body = parent[body]
            return False

        bodies = model.geom_bodyid
        robot = np.array([model.body_rootid[b] == robot_root for b in bodies])
        gripper = np.array([in_subtree(b, wrist) for b in bodies])
        pad_side = np.full(model.ngeom, -1, dtype=np.int64)
        for side, names in enumerate((LEFT_GRIPPER_GEOMS, RIGHT_GRIPPER_GEOMS)):
            for name in names:
                pad_side[model.geom(name).id] = side
        movable = np.array(
            [
                b != 0
                and not robot[g]
                and model.body_mocapid[model.body_rootid[b]] < 0
                and model.body_weldid[b] != 0
                for g, b in enumerate(bodies)
            ]
        )
        return cls(robot, gripper, pad_side, movable, np.flatnonzero(movable))

    def first_object_body(self, model) -> int:
        """The body of the first object geom (0, the world, if the scene has no object)."""
        return int(model.geom_bodyid[self.object_ids[0]]) if len(self.object_ids) else 0

    def nearest_object_body(self, model, data, position: np.ndarray) -> int | None:
        """The object body with the geom nearest to ``position`` (None if the scene has no object)."""
        if not len(self.object_ids):
            return None
        positions = data.geom_xpos[self.object_ids]
        nearest = self.object_ids[np.argmin(np.linalg.norm(positions - position, axis=1))]
        return int(model.geom_bodyid[nearest])

    def contacts(self, mujoco, model, data, main_body: int) -> dict[str, Any]:
        """This step's contacts (the ``contact`` entry of :meth:`AIMMetaWorldEnv.step`'s info)."""
        gripper_points, support_points = [], []
        pad_points: list[list[np.ndarray]] = [[], []]
        pad_forces = np.zeros(2)
        force = np.zeros(6)
        body = model.geom_bodyid
        for i in range(data.ncon):
            contact = data.contact[i]
            g1, g2 = int(contact.geom1), int(contact.geom2)
            for a, b in ((g1, g2), (g2, g1)):
                if self.gripper[a] and self.object[b]:
                    gripper_points.append(contact.pos.copy())
                    side = self.pad_side[a]
                    if side >= 0:
                        pad_points[side].append(contact.pos.copy())
                        mujoco.mj_contactForce(model, data, i, force)
                        pad_forces[side] += abs(force[0])
                    break
                if body[a] == main_body and body[b] != main_body and not self.robot[b]:
                    support_points.append(contact.pos.copy())
                    break
        return {
            "pad_contacts": np.array([len(p) > 0 for p in pad_points]),
            "gripper_object": bool(gripper_points),
            "points": pad_to_max_points(gripper_points),
            "num_points": min(len(gripper_points), MAX_CONTACT_POINTS),
            "pad_points": np.stack(
                [np.mean(p, axis=0) if p else np.full(3, np.nan) for p in pad_points]
            ).astype(np.float64),
            "pad_forces": pad_forces,
            "support_points": pad_to_max_points(support_points),
            "num_support_points": min(len(support_points), MAX_CONTACT_POINTS),
        }


def pad_to_max_points(points: list[np.ndarray]) -> np.ndarray:
    """(MAX_CONTACT_POINTS, 3): the first points, NaN-padded."""
    out = np.full((MAX_CONTACT_POINTS, 3), np.nan)
    if points:
        stacked = np.asarray(points[:MAX_CONTACT_POINTS], dtype=np.float64)
        out[: len(stacked)] = stacked
    return out
