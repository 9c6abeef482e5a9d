"""lerobot-aim-collect: MetaWorld expert episodes written as a value-map LeRobotDataset, checked
against MuJoCo's own renders.

One dataset is collected with the real CLI: pick-place-v3 (a grasp, then the collector's scripted
placement) and button-press-v3 (no grasp: the first gripper-button contact), one episode each, 64x64,
three cameras. The truth the stored value maps are compared with is not computed by the project: each
episode is replayed in MuJoCo (:mod:`tests.mujoco_truth`), the stored image orientation of every
camera is found by matching MuJoCo's RGB renders to the decoded frames, and the peak of every stored
map must lie on the target object's pixels in MuJoCo's segmentation render (the object alone, posed
as at the interaction the map points to). The same holds for ``lerobot-aim-annotate
--source=contacts`` re-rendering a dataset of value-map schema 1, and for the dense reward's
projection of the end effector (Stage II).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lerobot_aim.data import schema
from lerobot_aim.data.collect import (
    COLLECT_LOG,
    CollectConfig,
    CollectError,
    collect_dataset,
    read_collect_log,
)
from tests.mujoco_truth import (
    FINGERTIP_SCALE,
    ORIENTATIONS,
    distance_to_hull,
    distance_to_mask,
    hull_mask,
    replay_episode,
    stored_orientation,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZE = 64
TASKS = ["pick-place-v3", "button-press-v3"]
CAMERAS = ["head", "wrist_left", "wrist_right"]
REPO = "local/aim_collect_test"
# The MuJoCo body each task's value maps point at (MetaWorld's own names).
TARGET_BODY = {"pick-place-v3": "obj", "button-press-v3": "button"}
EVERY = 4  # replayed frames checked: every EVERY-th
PEAK_TOLERANCE_PX = 2.0  # map peak to the target's pixels (the head maps of schema 1 were 18 px off)


def run_cli(command: str, *args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run an installed console script (``lerobot-aim-collect``, ...) with ``args``."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run(
        [str(BIN / command), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        **kwargs,
    )


def load(root, repo_id=REPO):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root)


def episode_range(ds, episode: int) -> tuple[int, int]:
    ep = ds.meta.episodes[episode]
    return int(ep["dataset_from_index"]), int(ep["dataset_to_index"])


def episode_column(ds, episode: int, key: str) -> np.ndarray:
    start, stop = episode_range(ds, episode)
    return np.stack([np.asarray(v, dtype=np.float64) for v in ds.hf_dataset[key][start:stop]])


def finite(flat) -> np.ndarray:
    points = np.asarray(flat).reshape(-1, 3)
    return points[np.isfinite(points).all(axis=1)]


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("collect") / "metaworld"
    result = run_cli(
        "lerobot-aim-collect",
        f"--repo_id={REPO}",
        f"--root={root}",
        f"--task={','.join(TASKS)}",
        "--num_episodes=1",
        f"--image_size={SIZE}",
        "--preset=ultrafast",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return root


@pytest.fixture(scope="module")
def replays(collected):
    """Per episode: MuJoCo's renders of every EVERY-th frame of its replay."""
    ds, log = load(collected), read_collect_log(collected)
    cameras = dict(pair.split(":") for pair in log["cameras"].split(","))
    out = []
    for episode, entry in enumerate(log["episodes"]):
        event_steps = [event["step"] for event in entry["events"]]

        def pose_step(t, steps=event_steps):
            """The frame of the interaction the map of frame t points to (the next one, else the last)."""
            return next((s for s in steps if s >= t), steps[-1])

        out.append(
            replay_episode(
                entry["task"],
                entry["seed"],
                actions=episode_column(ds, episode, "action"),
                states=episode_column(ds, episode, "observation.state"),
                cameras=cameras,
                size=SIZE,
                steps=list(range(0, entry["num_frames"], EVERY)),
                target_body=TARGET_BODY[entry["task"]],
                pose_step=pose_step,
            )
        )
    return out


@pytest.fixture(scope="module")
def repaired(collected, tmp_path_factory):
    """A dataset as lerobot-aim-collect wrote it before schema 2, repaired by the documented command.

    The old collector stored the same calibration columns (the env's, rotation folded in) and images;
    it differed in ``info.json`` (schema 1, flip flags in the head intrinsics' info, read again by
    annotate) and in its head maps, which annotate re-renders from the recorded signals. The copy gets
    that ``info.json``.
    """
    base = tmp_path_factory.mktemp("schema1")
    legacy = base / "legacy"
    shutil.copytree(collected, legacy)
    info_path = legacy / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    for cam in CAMERAS:
        info["features"][schema.value_map_key(cam)]["info"][schema.SCHEMA_INFO] = 1
    info["features"][schema.intrinsics_key("head")]["info"] = dict.fromkeys(schema.LEGACY_FLIP_INFO, True)
    info_path.write_text(json.dumps(info, indent=4))
    out = base / "repaired"
    result = run_cli(
        "lerobot-aim-annotate",
        f"--repo_id={REPO}",
        f"--root={legacy}",
        "--output_repo_id=local/aim_collect_repaired",
        f"--output_root={out}",
        "--source=contacts",
        "--preset=ultrafast",
        "--image_writer_threads=0",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return legacy, out, result


def check_peaks_on_target(ds, replays) -> dict[str, list[float]]:
    """Pixels from each stored map's peak to the target object's pixels, per camera (see module doc).

    A frame of a camera is checked when its map shows a region (peak >= 0.5) away from the image
    border (a region outside the view peaks on the border) and the target shows in MuJoCo's render.
    """
    distances: dict[str, list[float]] = {cam: [] for cam in CAMERAS}
    for episode, replayed in enumerate(replays):
        start, _ = episode_range(ds, episode)
        items = [ds[start + step.step] for step in replayed]
        for cam in CAMERAS:
            frames = [item[schema.image_key(cam)].numpy().transpose(1, 2, 0) * 255 for item in items]
            orientation, errors = stored_orientation([step.rgb[cam] for step in replayed], frames)
            runner_up = sorted(errors.values())[1]
            assert errors[orientation] < 8 and runner_up > 2 * errors[orientation], (cam, errors)
            checked = 0
            for step, item in zip(replayed, items, strict=True):
                value = item[schema.value_map_key(cam)].numpy().mean(0)
                row, col = np.unravel_index(np.argmax(value), value.shape)
                target = ORIENTATIONS[orientation](step.target[cam])
                if value.max() < 0.5 or row in (0, SIZE - 1) or col in (0, SIZE - 1) or not target.any():
                    continue
                distances[cam].append(distance_to_mask(target, row, col))
                checked += 1
            assert checked >= 1, (episode, cam, "no frame shows the target and its region")
    return distances


def test_dataset_schema(collected):
    ds = load(collected)
    features = ds.meta.features
    assert ds.meta.total_episodes == 2 and ds.fps == 80
    schema.check_value_maps(features, CAMERAS)
    assert schema.head_camera(features) == "head" and schema.dataset_cameras(features) == CAMERAS
    for cam in CAMERAS:
        assert (
            features[schema.image_key(cam)]["dtype"]
            == features[schema.value_map_key(cam)]["dtype"]
            == "video"
        )
        assert tuple(features[schema.value_map_key(cam)]["shape"]) == (SIZE, SIZE, 3)
        assert features[schema.value_map_key(cam)]["info"][schema.SCHEMA_INFO] == schema.SCHEMA_VERSION == 2
        # The calibration describes the stored image: no flip flags beside it.
        assert not set(features[schema.intrinsics_key(cam)].get("info") or {}) & set(schema.LEGACY_FLIP_INFO)
    for key in (
        schema.EE_POSITION,
        schema.GRIPPER_CLOSED,
        schema.PAD_CONTACT,
        schema.OBJECT_POSITION,
        schema.CONTACT_POINTS,
        schema.SUPPORT_POINTS,
    ):
        assert key in features, key
    # LeRobot's TASK_DESCRIPTIONS wording.
    assert sorted(ds.meta.tasks.index) == ["Pick and place a puck to a goal", "Press a button"]
    item = ds[0]
    assert tuple(item[schema.value_map_key("head")].shape) == (3, SIZE, SIZE)
    assert item["observation.state"].shape == (4,)
    actions = np.stack(ds.hf_dataset["action"])
    assert actions.shape[1] == 4 and np.abs(actions).max() <= 1.0
    log = read_collect_log(collected)
    assert log["attempted_seeds"] == {task: [0] for task in TASKS}
    assert [e["task"] for e in log["episodes"]] == TASKS and all(e["success"] for e in log["episodes"])
    assert [[e["kind"] for e in entry["events"]] for entry in log["episodes"]] == [
        ["grasp", "place"],
        ["contact"],
    ]
    # Recording stops `steps_after_success` (10) frames after the button press's success.
    assert log["episodes"][1]["num_frames"] - log["episodes"][1]["success_step"] == 10
    assert not (collected / "images").exists()


def test_value_maps_peak_on_the_target_in_mujocos_render(collected, replays):
    distances = check_peaks_on_target(load(collected), replays)
    for cam, values in distances.items():
        assert len(values) >= 10, (cam, len(values))
        assert max(values) <= PEAK_TOLERANCE_PX, (cam, np.round(values, 1).tolist())


def test_schema1_dataset_is_refused_and_repaired_by_annotate(repaired, replays):
    legacy, out, result = repaired
    with pytest.raises(ValueError, match=r"schema \[1\].*--source=contacts") as error:
        schema.check_value_maps(load(legacy).meta.features, CAMERAS, source="dataset 'legacy'")
    assert "rotated 180 degrees" in str(error.value) and "lerobot-aim-collect" in str(error.value)
    assert "flip flags" in result.stderr  # the ignored flags are reported
    ds = load(out, "local/aim_collect_repaired")
    schema.check_value_maps(ds.meta.features, CAMERAS)
    assert not (ds.meta.features[schema.intrinsics_key("head")].get("info") or {})
    distances = check_peaks_on_target(ds, replays)
    for cam, values in distances.items():
        assert len(values) >= 10 and max(values) <= PEAK_TOLERANCE_PX, (cam, np.round(values, 1).tolist())


def test_annotate_contacts_finds_the_collectors_events_and_maps(collected, repaired):
    _, out, _ = repaired
    src, rerendered = load(collected), load(out, "local/aim_collect_repaired")
    summary = (out / "README.md").read_text()
    assert "1 grasp" in summary and "1 place" in summary and "1 contact" in summary
    for index in range(0, len(src), 7):
        for cam in CAMERAS:
            a = src[index][schema.value_map_key(cam)].numpy().mean(0)
            b = rerendered[index][schema.value_map_key(cam)].numpy().mean(0)
            assert np.abs(a - b).max() < 0.1, (index, cam)


def test_dense_reward_reads_the_map_at_the_fingertips(replays):
    """The end effector that the Stage II reward projects lies between the fingertips MuJoCo renders."""
    from lerobot_aim.asvm.packing import pack_tpose
    from lerobot_aim.rl.rewards import dense_reward, read_env_geometry

    checked = dict.fromkeys(CAMERAS, 0)
    for replayed in replays:
        orientation = {
            cam: stored_orientation([s.rgb[cam] for s in replayed], [s.observation[cam] for s in replayed])[0]
            for cam in CAMERAS
        }
        for step in replayed:
            geometry = read_env_geometry(step.info, {cam: (SIZE, SIZE) for cam in CAMERAS})
            for cam in CAMERAS:
                tips = step.fingertips[cam]
                calibration = geometry.cameras[cam]
                uv, depth = calibration.project(geometry.ee_pos[None])
                if tips is None or depth[0] <= 0 or not calibration.in_image(uv)[0]:
                    continue
                tips = ORIENTATIONS[orientation[cam]](tips)
                row, col = (uv[0, ::-1] + 0.5) * FINGERTIP_SCALE - 0.5
                assert distance_to_hull(tips, row, col) <= FINGERTIP_SCALE * 0.5, (step.step, cam)
                # The reward read from a map that is 1 between the fingertips of this view only.
                views = [
                    torch.from_numpy(hull_mask(tips, FINGERTIP_SCALE) if c == cam else np.zeros((SIZE, SIZE)))
                    for c in CAMERAS
                ]
                canvas = pack_tpose([v.float()[None] for v in views])
                reward = dense_reward(canvas, geometry, CAMERAS, (SIZE, SIZE), views="max")
                assert reward > 0.5, (step.step, cam, reward)
                checked[cam] += 1
    assert min(checked.values()) >= 10, checked


def test_resume_false_refuses_an_existing_dataset(collected):
    cfg = CollectConfig(
        repo_id=REPO,
        root=str(collected),
        task="button-press-v3",
        num_episodes=1,
        image_size=SIZE,
        resume=False,
    )
    with pytest.raises(CollectError, match="--resume=true"):
        collect_dataset(cfg)
    other_size = CollectConfig(
        repo_id=REPO, root=str(collected), task="button-press-v3", num_episodes=1, image_size=32
    )
    with pytest.raises(CollectError, match="does not match"):
        collect_dataset(other_size)
    assert load(collected).meta.total_episodes == 2


def test_pick_place_events_switch_from_grasp_to_place(collected):
    entry = read_collect_log(collected)["episodes"][0]
    grasp, place = entry["events"]
    assert grasp["step"] < entry["success_step"] <= entry["place_step"] < place["step"] < entry["num_frames"]
    grasp_points, place_points = np.array(grasp["points"]), np.array(place["points"])
    assert np.abs(place_points[:, 2]).max() < 0.01  # the puck's contacts with the table
    assert np.linalg.norm(grasp_points.mean(0)[:2] - place_points.mean(0)[:2]) > 0.1
    # The recorded signals hold the event regions: the contacts at the grasp and support at the place.
    ds = load(collected)
    contacts = episode_column(ds, 0, schema.CONTACT_POINTS)
    support = episode_column(ds, 0, schema.SUPPORT_POINTS)
    np.testing.assert_allclose(finite(contacts[grasp["step"]]), grasp_points, atol=1e-4)
    np.testing.assert_allclose(finite(support[place["step"]]), place_points, atol=1e-4)


def test_config_errors():
    with pytest.raises(CollectError, match="Unknown MetaWorld task"):
        CollectConfig(task="pick-place-v9")
    with pytest.raises(CollectError, match="even"):
        CollectConfig(image_size=65)
    with pytest.raises(CollectError, match="place_after_success"):
        CollectConfig(place_after_success="sometimes")
    assert COLLECT_LOG == "meta/aim_collect.json"
    assert json.dumps(CollectConfig().map_settings())
