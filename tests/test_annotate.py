"""lerobot-aim-annotate from end-effector poses: value maps added to a RoboTwin-like dataset
(:mod:`tests.annotate_datasets`); the annotated maps are decoded and their peaks compared with the
projections of the known grasp and release points.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import schema
from lerobot_aim.data.annotate import AnnotateConfig, annotate_dataset
from lerobot_aim.viz.contact_sheet import sheet_size
from tests.annotate_datasets import (
    CAMERAS,
    FPS,
    HEAD_K,
    HEAD_RT,
    POSES_FLAGS,
    SCHEDULE,
    STARTS,
    TASKS,
    H,
    T,
    W,
    build_robotwin_like,
    expected_targets,
    trajectory,
    tree_hashes,
    write_head_yaml,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    base = tmp_path_factory.mktemp("robotwin")
    root = build_robotwin_like(base / "src")
    return root, write_head_yaml(base / "calib.yaml")


@pytest.fixture(scope="module")
def annotated(source, tmp_path_factory):
    root, calib = source
    before = tree_hashes(root)
    out = tmp_path_factory.mktemp("out") / "annotated"
    cfg = AnnotateConfig(
        repo_id="local/robotwin_like",
        root=str(root),
        output_repo_id="local/robotwin_like_aim",
        output_root=str(out),
        calibration=str(calib),
        radius=0.03,
        **POSES_FLAGS,
    )
    summary = annotate_dataset(cfg)
    return out, summary, before


def decoded_maps(out: Path, repo_id="local/robotwin_like_aim"):
    """{(episode, cam): (T, H, W) float maps} and {(episode, cam): per-step calibration} of the output."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id, root=out)
    maps, calibs = {}, {}
    for i in range(len(ds)):
        item = ds[i]
        ep, t = int(item["episode_index"]), int(item["frame_index"])
        for cam in CAMERAS:
            maps.setdefault((ep, cam), np.zeros((T, H, W)))[t] = (
                item[schema.value_map_key(cam)].numpy().mean(0)
            )
            if cam == "head":
                calib = CameraCalibration(HEAD_K, HEAD_RT, W, H)
            else:
                calib = CameraCalibration.from_flat(
                    item[schema.intrinsics_key(cam)].numpy(), item[schema.extrinsics_key(cam)].numpy(), W, H
                )
            calibs.setdefault((ep, cam), [None] * T)[t] = calib
    return ds, maps, calibs


def check_peaks(maps, calibs, radius=0.03, episodes=(0, 1)):
    """Every arm's next target is a local peak of every camera's map where it is in view; the arm's
    other point (release before the grasp, grasp after it) is dark when far from any target."""
    checked = {"grasp": 0, "release": 0}
    for ep in episodes:
        for cam in CAMERAS:
            for t in range(T):
                calib, value = calibs[(ep, cam)][t], maps[(ep, cam)][t]
                targets = expected_targets(ep, t)
                uv_targets, depth = calib.project(np.stack(targets))
                sigma = calib.focal_px[0] * radius / depth
                for arm, (close, _, grasp, release) in enumerate(SCHEDULE[ep]):
                    u, v = uv_targets[arm]
                    if not (2 <= u <= W - 3 and 2 <= v <= H - 3):
                        continue
                    iu, iv = int(round(u)), int(round(v))
                    assert value[iv, iu] > 0.75, (ep, cam, t, arm, value[iv, iu])
                    window = value[iv - 2 : iv + 3, iu - 2 : iu + 3]
                    pv, pu = np.unravel_index(int(window.argmax()), window.shape)
                    assert abs(pu - 2) <= 1 and abs(pv - 2) <= 1, (ep, cam, t, arm)
                    checked["grasp" if t <= close else "release"] += 1
                    other = np.asarray(release if t <= close else grasp, float)
                    uv_other, d_other = calib.project(other[None])
                    if d_other[0] > 0 and calib.in_image(uv_other)[0]:
                        far = np.linalg.norm(uv_targets - uv_other, axis=1) > 4 * sigma.max() + 2
                        if far.all():
                            ou, ov = np.round(uv_other[0]).astype(int)
                            assert value[ov, ou] < 0.3, (ep, cam, t, arm, "other point lit", value[ov, ou])
    assert checked["grasp"] > 20 and checked["release"] > 20, checked


def test_source_untouched_and_schema(source, annotated):
    root, _ = source
    out, summary, before = annotated
    assert tree_hashes(root) == before
    info = json.loads((out / "meta" / "info.json").read_text())
    features = info["features"]
    schema.check_value_maps(features, list(CAMERAS), source="the annotated dataset")
    for cam in CAMERAS:
        ft = features[schema.value_map_key(cam)]
        assert ft["dtype"] == "video" and tuple(ft["shape"]) == (H, W, 3)
        assert ft["info"]["aim.value_map_schema"] == schema.SCHEMA_VERSION
        assert ft["info"]["aim.head_camera"] == "head"
    src_info = json.loads((root / "meta" / "info.json").read_text())
    assert set(src_info["features"]) < set(features)
    assert info["fps"] == FPS and info["robot_type"] == "aloha_agilex"
    assert info["total_episodes"] == 2 and info["total_frames"] == 2 * T
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert schema.value_map_key("head") in stats and "observation.state" in stats
    # No temporary folder is left next to the output.
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert summary.head_camera == "head" and summary.cameras == list(CAMERAS)


def test_value_map_peaks_follow_both_arms(annotated):
    out, summary, _ = annotated
    # Two arms x two episodes, one grasp and one place each.
    assert summary.events == {(0, "grasp"): 2, (0, "place"): 2, (1, "grasp"): 2, (1, "place"): 2}
    assert summary.episodes_without_events == []
    ds, maps, calibs = decoded_maps(out)
    check_peaks(maps, calibs)
    # Copied features and tasks survive.
    item = ds[T + 5]
    assert item["task"] == TASKS[1]
    close, open_, grasp, _ = SCHEDULE[1][0]
    ee, gripper = trajectory(close, open_, grasp, SCHEDULE[1][0][3], STARTS[0])
    np.testing.assert_allclose(item["observation.state"][:3].numpy(), ee[5], atol=1e-6)
    assert float(item["observation.state"][7]) == gripper[5]


def test_card_documents_value_maps(annotated):
    out, summary, _ = annotated
    card = (out / "README.md").read_text()
    for cam in CAMERAS:
        assert schema.value_map_key(cam) in card
    for text in (
        "poses",
        "radius 0.03",
        "4 grasp",
        "4 place",
        "lerobot-train --policy.type=aim",
        "re-encoded",
    ):
        assert text in card, text
    assert "local/robotwin_like_aim" in card and "LeRobot" in card


def test_cli_writes_contact_sheets(source, tmp_path):
    root, calib = source
    out = tmp_path / "cli_out"
    cmd = [
        sys.executable,
        "-m",
        "lerobot_aim.data.annotate",
        "--repo_id=local/robotwin_like",
        f"--root={root}",
        "--output_repo_id=local/robotwin_like_cli",
        f"--output_root={out}",
        "--source=poses",
        "--cameras=[left_camera,head,right_camera]",
        "--head_camera=head",
        "--ee_key=observation.state",
        "--ee_slices=[[0,3],[8,11]]",
        "--gripper_key=observation.state",
        "--gripper_indices=[7,15]",
        "--gripper_closed_is_low=true",
        f"--calibration={calib}",
        "--contact_sheets=true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    from PIL import Image

    for episode in range(2):
        sheet = out / "contact_sheets" / f"episode_{episode:04d}.png"
        width, height = sheet_size(T, H, W, every=math.ceil(T / 8), columns=8)
        assert Image.open(sheet).size == (width, 3 * height + 2 * 2)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"][schema.value_map_key("left_camera")]["info"]["aim.head_camera"] == "head"
    assert "contact_sheets/" in (out / "README.md").read_text()
