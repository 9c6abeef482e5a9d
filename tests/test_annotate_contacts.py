"""lerobot-aim-annotate from recorded contacts (simulators): grasp, place and first-contact maps on a
rotated head camera stored as images, with and without the flip flags of value-map schema 1."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import schema
from lerobot_aim.data.annotate import AnnotateConfig, annotate_dataset
from lerobot_aim.viz.contact_sheet import sheet_size
from tests.annotate_datasets import (
    HEAD_K,
    HEAD_RT,
    H,
    T,
    W,
    quiet_create,
    render,
)

ROOT = Path(__file__).resolve().parents[1]


K_POINTS = 4
OBJ0, OBJ1 = np.array([0.05, 0.05, 0.02]), np.array([-0.10, -0.08, 0.02])
GRASP_STEP, OPEN_STEP, RELEASE_STEP, CARRY_END = 8, 19, 20, 18
PRESS_STEP = 12
PRESS_POINT = np.array([0.12, -0.02, 0.0])


def contacts_episode(episode: int):
    """Per-step signals of a pick-and-place (episode 0) or a press without grasp (episode 1)."""
    rows = []
    for t in range(T):
        if episode == 0:
            if t < GRASP_STEP:
                obj = OBJ0
            elif t <= CARRY_END:
                obj = OBJ0 + (OBJ1 - OBJ0) * (t - GRASP_STEP) / (CARRY_END - GRASP_STEP)
            else:
                obj = OBJ1
            closed = 1.0 if 6 <= t < OPEN_STEP else 0.0
            pads = [1.0, 1.0] if GRASP_STEP <= t < RELEASE_STEP else [0.0, 0.0]
            contacts = [obj + (0.02, 0, 0), obj - (0.02, 0, 0)] if pads[0] else []
            support = [obj - (0, 0, 0.02)] if t < GRASP_STEP or t >= RELEASE_STEP else []
        else:
            obj, closed = np.array([0.12, -0.02, 0.03]), 0.0
            pads = [1.0, 0.0] if t >= PRESS_STEP else [0.0, 0.0]
            contacts = [PRESS_POINT] if t >= PRESS_STEP else []
            support = [obj - (0, 0, 0.03)]
        rows.append((obj, closed, pads, contacts, support))
    return rows


# The head camera renders upside down and its images are stored rotated by 180 degrees (as MetaWorld's
# corner cameras): a world point seen at (u, v) by the camera HEAD_K [HEAD_RT] is stored at
# (W - 1 - u, H - 1 - v). The calibration columns describe the stored image: the rotation is a roll of
# the camera about its optical axis (x, y negated) with the principal point mirrored.
STORED_HEAD_K = HEAD_K.copy()
STORED_HEAD_K[:2, 2] = [W - 1 - HEAD_K[0, 2], H - 1 - HEAD_K[1, 2]]
STORED_HEAD_RT = np.diag([-1.0, -1.0, 1.0]) @ HEAD_RT


def stored_head_pixel(point) -> np.ndarray:
    """Where a world point lies in the stored (rotated) head image: the upright projection, rotated."""
    uv, _ = CameraCalibration(HEAD_K, HEAD_RT, W, H).project(np.asarray(point, float).reshape(1, 3))
    return np.array([W - 1 - uv[0, 0], H - 1 - uv[0, 1]])


def build_contacts_dataset(root: Path, legacy_flip_flags: bool = False) -> Path:
    """One arm, a rotated head camera stored as images (not videos), calibration columns + raw signals.

    ``legacy_flip_flags``: also write the flip flags that lerobot-aim-collect of schema 1 put into the
    intrinsics feature's info next to the same (already rotated) calibration columns.
    """
    features = {
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
        schema.image_key("head"): {
            "dtype": "image",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        },
        **schema.calibration_features(["head"]),
        **schema.annotation_signal_features(
            n_arms=1, pads_per_arm=2, max_contact_points=K_POINTS, with_ee_position=False
        ),
    }
    if legacy_flip_flags:
        features[schema.intrinsics_key("head")]["info"] = dict.fromkeys(schema.LEGACY_FLIP_INFO, True)
    ds = quiet_create(root, "local/contacts", features, use_videos=False, robot_type="sim")
    stored = CameraCalibration(STORED_HEAD_K, STORED_HEAD_RT, W, H)
    K, Rt = stored.to_flat()
    for episode in range(2):
        for obj, closed, pads, contacts, support in contacts_episode(episode):
            ds.add_frame(
                {
                    "observation.state": obj.astype(np.float32),
                    "action": obj.astype(np.float32),
                    schema.image_key("head"): render(stored, [(obj, (220, 40, 40))]),
                    schema.intrinsics_key("head"): K,
                    schema.extrinsics_key("head"): Rt,
                    schema.GRIPPER_CLOSED: np.array([closed], np.float32),
                    schema.PAD_CONTACT: np.array(pads, np.float32),
                    schema.OBJECT_POSITION: obj.astype(np.float32),
                    schema.CONTACT_POINTS: schema.pad_points([contacts], K_POINTS),
                    schema.SUPPORT_POINTS: schema.pad_points([support], K_POINTS),
                    "task": ["pick and place the block", "press the button"][episode],
                }
            )
        ds.save_episode()
    ds.finalize()
    return root


@pytest.mark.parametrize("legacy_flip_flags", [False, True], ids=["schema2", "schema1_flip_flags"])
def test_contacts_source(tmp_path, legacy_flip_flags):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = build_contacts_dataset(tmp_path / "contacts", legacy_flip_flags)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert bool(info["features"][schema.intrinsics_key("head")].get("info")) == legacy_flip_flags
    out = tmp_path / "contacts_aim"
    summary = annotate_dataset(
        AnnotateConfig(
            repo_id="local/contacts",
            root=str(root),
            output_repo_id="local/contacts_aim",
            output_root=str(out),
            source="contacts",
            contact_sheets=True,
            contact_sheet_scale=2,
        )
    )
    assert summary.events == {(0, "grasp"): 1, (0, "place"): 1, (0, "contact"): 1}
    ds = LeRobotDataset("local/contacts_aim", root=out)
    assert ds.meta.features[schema.value_map_key("head")]["dtype"] == "image"
    schema.check_value_maps(ds.meta.features, ["head"])
    # The flags of schema 1 are not used (the columns are) and not copied.
    assert not (ds.meta.features[schema.intrinsics_key("head")].get("info") or {})
    rows = contacts_episode(0)
    grasp_region = np.stack(rows[GRASP_STEP][3])
    place_region = np.stack(rows[RELEASE_STEP][4])
    for t in range(T):
        value = ds[t][schema.value_map_key("head")].numpy().mean(0)
        region, other = (grasp_region, place_region) if t <= GRASP_STEP else (place_region, grasp_region)
        for point in region:
            u, v = np.round(stored_head_pixel(point)).astype(int)
            assert value[v, u] > 0.9, (t, value[v, u])
        ou, ov = np.round(stored_head_pixel(other[0])).astype(int)
        assert value[ov, ou] < 0.3, t
    # The press episode: the first contact point from the start.
    pu, pv = np.round(stored_head_pixel(PRESS_POINT)).astype(int)
    assert all(
        ds[T + t][schema.value_map_key("head")].numpy().mean(0)[pv, pu] > 0.9 for t in (0, PRESS_STEP, T - 1)
    )
    # Raw signals are copied (NaN padding included) and images stay images, unchanged (PNG, lossless).
    item = ds[0]
    src_item = LeRobotDataset("local/contacts", root=root)[0]
    assert np.array_equal(item[schema.image_key("head")].numpy(), src_item[schema.image_key("head")].numpy())
    assert np.isnan(item[schema.CONTACT_POINTS].numpy()).all()
    np.testing.assert_allclose(item[schema.OBJECT_POSITION].numpy(), OBJ0, atol=1e-6)
    from PIL import Image

    width, height = sheet_size(T, H, W, every=math.ceil(T / 8), columns=8, scale=2)
    assert Image.open(out / "contact_sheets" / "episode_0001.png").size == (width, height)
    assert "contacts" in (out / "README.md").read_text()
