"""lerobot-aim-annotate: value maps added to a RoboTwin-like dataset, from poses and from contacts.

The source datasets are built here in LeRobot's real format with a known world: two arms whose
grippers close on known 3-D points and open at known release points, a fixed head camera (calibrated
by a YAML file) and two wrist cameras that move with the arms (per-step calibration columns). The
annotated maps are decoded and their peaks compared with the projections of those points.
"""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lerobot_aim.asvm.camera import CameraCalibration
from lerobot_aim.data import schema
from lerobot_aim.data.annotate import AnnotateConfig, AnnotationError, annotate_dataset
from lerobot_aim.viz.contact_sheet import sheet_size

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 64
T = 30
FPS = 10
CAMERAS = ("head", "left_camera", "right_camera")
# Per episode and arm: (close step, open step, grasp point, release point); arm 0 = left, 1 = right.
SCHEDULE = [
    [
        (8, 18, (-0.15, 0.10, 0.02), (-0.20, -0.12, 0.05)),
        (12, 24, (0.18, 0.08, 0.02), (0.10, -0.15, 0.05)),
    ],
    [
        (10, 20, (-0.10, 0.12, 0.03), (-0.22, -0.05, 0.04)),
        (6, 16, (0.15, 0.12, 0.02), (0.22, -0.10, 0.05)),
    ],
]
STARTS = [(-0.25, -0.20, 0.25), (0.25, -0.20, 0.25)]
TASKS = ["put both blocks on the pads", "swap the blocks"]
HEAD_K = np.array([[60.0, 0.0, (W - 1) / 2], [0.0, 60.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
WRIST_K = np.array([[40.0, 0.0, (W - 1) / 2], [0.0, 40.0, (H - 1) / 2], [0.0, 0.0, 1.0]])


def look_at(position, target) -> np.ndarray:
    """World-to-camera [R|t] (OpenCV: x right, y down, z forward) of a camera at ``position``."""
    position, target = np.asarray(position, float), np.asarray(target, float)
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, (-rotation @ position)[:, None]], axis=1)


HEAD_RT = look_at((0.0, -0.55, 0.75), (0.0, 0.0, 0.05))


def wrist_rt(ee) -> np.ndarray:
    ee = np.asarray(ee, float)
    return look_at(ee + (0.0, -0.1, 0.3), ee + (0.0, 0.1, -0.3))


def trajectory(close, open_, grasp, release, start) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3) tool-centre positions and (T,) gripper value (1 open, 0 closed: RoboTwin's convention)."""
    start, grasp, release = (np.asarray(p, float) for p in (start, grasp, release))
    ee = np.empty((T, 3))
    for t in range(T):
        if t <= close:
            ee[t] = start + (grasp - start) * t / close
        elif t <= open_:
            ee[t] = grasp + (release - grasp) * (t - close) / (open_ - close)
        else:
            ee[t] = release + np.array([0.0, 0.0, 0.15]) * (t - open_) / (T - 1 - open_)
    gripper = np.where((np.arange(T) >= close) & (np.arange(T) < open_), 0.0, 1.0)
    return ee, gripper


def expected_targets(episode: int, t: int) -> list[np.ndarray]:
    """Each arm's next interaction point at step t: grasp point up to the close step, then release."""
    return [
        np.asarray(grasp if t <= close else release, float) for close, _, grasp, release in SCHEDULE[episode]
    ]


def render(calib: CameraCalibration, points: list[tuple[np.ndarray, tuple]]) -> np.ndarray:
    img = np.full((H, W, 3), (70, 70, 80), dtype=np.uint8)
    for point, colour in points:
        uv, depth = calib.project(np.asarray(point, float)[None])
        if depth[0] > 0 and calib.in_image(uv)[0]:
            u, v = np.round(uv[0]).astype(int)
            img[max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2] = colour
    return img


def quiet_create(root, repo_id, features, use_videos=True, robot_type="aloha_agilex"):
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    encoder = RGBEncoderConfig(vcodec="h264", crf=18, g=2, preset="ultrafast") if use_videos else None
    return LeRobotDataset.create(
        repo_id=repo_id,
        fps=FPS,
        features=features,
        root=root,
        robot_type=robot_type,
        use_videos=use_videos,
        rgb_encoder=encoder,
    )


def build_robotwin_like(root: Path, head_columns: bool = False) -> Path:
    """Two arms, head + two wrist cameras; state = [xyz, quat, gripper] per arm (16), RoboTwin-like."""
    from lerobot_aim.data.synthetic import _quiet_libav

    features = {
        "observation.state": {"dtype": "float32", "shape": (16,), "names": None},
        "action": {"dtype": "float32", "shape": (16,), "names": None},
    }
    for cam in CAMERAS:
        features[schema.image_key(cam)] = {
            "dtype": "video",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        }
    features.update(schema.calibration_features([c for c in CAMERAS if head_columns or c != "head"]))
    with _quiet_libav():
        ds = quiet_create(root, "local/robotwin_like", features)
        for episode, arms in enumerate(SCHEDULE):
            traj = [trajectory(*arm, STARTS[a]) for a, arm in enumerate(arms)]
            for t in range(T):
                state = np.concatenate(
                    [np.concatenate([traj[a][0][t], [0.0, 0.0, 0.0, 1.0], [traj[a][1][t]]]) for a in range(2)]
                ).astype(np.float32)
                scene = [(arm[2], (220, 40, 40)) for arm in arms] + [(arm[3], (40, 200, 60)) for arm in arms]
                scene += [(traj[a][0][t], (255, 255, 255)) for a in range(2)]
                frame = {"observation.state": state, "action": state.copy(), "task": TASKS[episode]}
                for cam in CAMERAS:
                    K, Rt = (
                        (HEAD_K, HEAD_RT)
                        if cam == "head"
                        else (WRIST_K, wrist_rt(traj[CAMERAS.index(cam) - 1][0][t]))
                    )
                    calib = CameraCalibration(K, Rt, W, H)
                    frame[schema.image_key(cam)] = render(calib, scene)
                    if cam != "head" or head_columns:
                        frame[schema.intrinsics_key(cam)], frame[schema.extrinsics_key(cam)] = calib.to_flat()
                ds.add_frame(frame)
            ds.save_episode(parallel_encoding=False)
        ds.finalize()
    return root


def write_head_yaml(path: Path) -> Path:
    path.write_text(
        "cameras:\n"
        "  head:\n"
        f"    K: {HEAD_K.tolist()}\n"
        f"    extrinsics: {np.vstack([HEAD_RT, [0, 0, 0, 1]]).tolist()}\n"
        f"    width: {W}\n    height: {H}\n"
    )
    return path


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


POSES_FLAGS = dict(
    source="poses",
    ee_key="observation.state",
    ee_slices="0:3;8:11",
    gripper_key="observation.state",
    gripper_indices="7,15",
    gripper_closed_is_low=True,
)


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
        "--cameras=left_camera,head,right_camera",
        "--head_camera=head",
        "--ee_key=observation.state",
        "--ee_slices=0:3;8:11",
        "--gripper_key=observation.state",
        "--gripper_indices=7,15",
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


def test_cli_refuses_existing_output(source, tmp_path):
    root, _ = source
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    cmd = [
        sys.executable,
        "-m",
        "lerobot_aim.data.annotate",
        "--repo_id=local/robotwin_like",
        f"--root={root}",
        "--output_repo_id=local/taken",
        f"--output_root={out}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "already exists" in result.stderr and "--overwrite=true" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_errors_name_what_to_set(source, tmp_path):
    root, calib = source
    base = dict(repo_id="local/robotwin_like", root=str(root), output_repo_id="local/x")
    out = tmp_path / "never"
    with pytest.raises(AnnotationError) as error:
        annotate_dataset(AnnotateConfig(**base, output_root=str(out), calibration=str(calib)))
    message = str(error.value)
    assert "observation.ee_position" in message and "--ee_key" in message and "observation.state" in message

    with pytest.raises(AnnotationError) as error:
        annotate_dataset(AnnotateConfig(**base, output_root=str(out), **POSES_FLAGS))
    message = str(error.value)
    assert "'head'" in message and "--calibration=calib.yaml" in message and "extrinsics:" in message

    with pytest.raises(AnnotationError, match=r"\['top_cam'\].*not in the dataset"):
        annotate_dataset(
            AnnotateConfig(
                **base, output_root=str(out), calibration=str(calib), cameras="head,top_cam", **POSES_FLAGS
            )
        )
    with pytest.raises(AnnotationError, match="gripper_indices"):
        annotate_dataset(
            AnnotateConfig(
                **base,
                output_root=str(out),
                calibration=str(calib),
                **{**POSES_FLAGS, "gripper_indices": "7"},
            )
        )
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_calibration_yaml_forms(tmp_path):
    """4x4 / camera-to-world extrinsics, flips and a K given for another resolution all load."""
    from lerobot_aim.data.annotate import _rescale_intrinsics, load_calibration_yaml

    pose = np.linalg.inv(np.vstack([HEAD_RT, [0, 0, 0, 1]]))  # camera-to-world
    path = tmp_path / "c.yaml"
    path.write_text(
        "head:\n"
        f"  intrinsics: {HEAD_K.reshape(-1).tolist()}\n"
        f"  extrinsics: {pose.tolist()}\n"
        "  convention: camera_to_world\n"
        "  flip: true\n"
    )
    spec = load_calibration_yaml(path)["head"]
    np.testing.assert_allclose(spec["extrinsics"], HEAD_RT, atol=1e-9)
    assert spec["flip_u"] and spec["flip_v"] and spec["width"] is None
    # A K for a 2x larger image, rescaled: a point lands at the same place, pixel-centre convention.
    big = np.diag([2.0, 2.0, 1.0]) @ HEAD_K
    big[:2, 2] = (HEAD_K[:2, 2] + 0.5) * 2 - 0.5
    np.testing.assert_allclose(_rescale_intrinsics(big, (2 * H, 2 * W), (H, W)), HEAD_K, atol=1e-9)
    (tmp_path / "bad.yaml").write_text("head: {K: [1, 2, 3]}\n")
    with pytest.raises(AnnotationError, match="extrinsics"):
        load_calibration_yaml(tmp_path / "bad.yaml")


def test_overwrite_replaces_atomically(source, tmp_path):
    root, calib = source
    out = tmp_path / "replace_me"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    cfg = AnnotateConfig(
        repo_id="local/robotwin_like",
        root=str(root),
        output_repo_id="local/replaced",
        output_root=str(out),
        calibration=str(calib),
        cameras="head",
        overwrite=True,
        **POSES_FLAGS,
    )
    annotate_dataset(cfg)
    assert not (out / "stale.txt").exists() and (out / "meta" / "info.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replace_me"]


# ── Contacts source ─────────────────────────────────────────────────────

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
