"""lerobot-aim-annotate when the input is wrong: refusals and one-line messages that say what to fix
(through the CLI), YAML calibration forms, and replacing only a LeRobot dataset."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lerobot_aim.data import schema
from lerobot_aim.data.annotate import AnnotateConfig, AnnotationError, annotate_dataset
from tests.annotate_datasets import (
    HEAD_K,
    HEAD_RT,
    POSES_FLAGS,
    H,
    T,
    W,
    build_robotwin_like,
    write_head_yaml,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    base = tmp_path_factory.mktemp("robotwin")
    root = build_robotwin_like(base / "src")
    return root, write_head_yaml(base / "calib.yaml")


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
                **base,
                output_root=str(out),
                calibration=str(calib),
                cameras=["head", "top_cam"],
                **POSES_FLAGS,
            )
        )
    with pytest.raises(AnnotationError, match="gripper_indices"):
        annotate_dataset(
            AnnotateConfig(
                **base,
                output_root=str(out),
                calibration=str(calib),
                **{**POSES_FLAGS, "gripper_indices": [7]},
            )
        )
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_calibration_yaml_forms(tmp_path):
    """4x4 / camera-to-world extrinsics, flips and a K given for another resolution all load."""
    from lerobot_aim.data.calibration import load_calibration_yaml, rescale_intrinsics

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
    np.testing.assert_allclose(rescale_intrinsics(big, (2 * H, 2 * W), (H, W)), HEAD_K, atol=1e-9)
    (tmp_path / "bad.yaml").write_text("head: {K: [1, 2, 3]}\n")
    with pytest.raises(AnnotationError, match="extrinsics"):
        load_calibration_yaml(tmp_path / "bad.yaml")


def test_overwrite_replaces_only_a_dataset(source, tmp_path):
    root, calib = source
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep")
    cmd = [
        sys.executable,
        "-m",
        "lerobot_aim.data.annotate",
        "--repo_id=local/robotwin_like",
        f"--root={root}",
        "--output_repo_id=local/replaced",
        f"--output_root={notes}",
        "--overwrite=true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "replaces only a LeRobot dataset" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]

    # A dataset is replaced, and only once the new one is complete.
    out = tmp_path / "replace_me"
    shutil.copytree(root, out)
    cfg = AnnotateConfig(
        repo_id="local/robotwin_like",
        root=str(root),
        output_repo_id="local/replaced",
        output_root=str(out),
        calibration=str(calib),
        cameras=["head"],
        overwrite=True,
        **POSES_FLAGS,
    )
    annotate_dataset(cfg)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert schema.value_map_key("head") in info["features"]
    assert schema.value_map_key("left_camera") not in info["features"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "replace_me"]


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """``lerobot-aim-annotate``'s main() with ``argv``: (exit status, stderr)."""
    from lerobot_aim.data.annotate import main

    monkeypatch.setattr(sys, "argv", ["lerobot-aim-annotate", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def poses_argv(root: Path, out: Path, calibration: Path) -> list[str]:
    return [
        "--repo_id=local/robotwin_like",
        f"--root={root}",
        "--output_repo_id=local/never",
        f"--output_root={out}",
        "--source=poses",
        "--ee_key=observation.state",
        "--ee_slices=[[0,3],[8,11]]",
        "--gripper_key=observation.state",
        "--gripper_indices=[7,15]",
        "--gripper_closed_is_low=true",
        f"--calibration={calibration}",
    ]


def with_nan(source_root: Path, root: Path, key: str, rows: slice, dims: slice) -> Path:
    """A copy of the dataset whose ``key`` column is NaN at ``rows`` (dataset frames), ``dims``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(source_root, root)
    (path,) = (root / "data").rglob("*.parquet")
    table = pq.read_table(path)
    values = np.stack(table.column(key).to_numpy(zero_copy_only=False)).astype(np.float32)
    values[rows, dims] = np.nan
    column = pa.array(list(values), type=table.schema.field(key).type)
    pq.write_table(table.set_column(table.schema.get_field_index(key), key, column), path)
    return root


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "cameras:\n  head:\n    K: [[60, 0, 31.5], [0, nan, 23.5], [0, 0, 1]]\n    extrinsics: EXT\n",
            "NaN",
        ),
        (
            "cameras:\n  head:\n    K: [[sixty, 0, 31.5], [0, 60, 23.5], [0, 0, 1]]\n    extrinsics: EXT\n",
            "3x3 numbers",
        ),
        ("cameras:\n  head:\n    K: [[60, 0, 31.5]\n    extrinsics: EXT\n", "is not valid YAML (line"),
        ("cameras:\n  head:\n    K: K3\n    extrinsics: EXT\n    width: 64.5\n", "whole number of pixels"),
    ],
    ids=["nan", "not_a_number", "unparsable", "bad_width"],
)
def test_bad_calibration_yaml_gets_one_line(source, tmp_path, monkeypatch, capsys, text, message):
    root, _ = source
    yaml_path = tmp_path / "calib.yaml"
    yaml_path.write_text(
        text.replace("EXT", str(np.vstack([HEAD_RT, [0, 0, 0, 1]]).tolist())).replace(
            "K3", str(HEAD_K.tolist())
        )
    )
    code, err = run_main(poses_argv(root, tmp_path / "out", yaml_path), monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err, err[-2000:]
    assert str(yaml_path) in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "key, dims, message",
    [
        ("observation.state", slice(8, 11), "`observation.state` is NaN or infinite at 3 of 30 frames"),
        (
            schema.extrinsics_key("left_camera"),
            slice(0, 12),
            "the calibration `observation.camera.left_camera",
        ),
    ],
    ids=["ee_poses", "calibration_columns"],
)
def test_nan_in_the_dataset_is_refused_before_writing(
    source, tmp_path, monkeypatch, capsys, key, dims, message
):
    """NaN end-effector poses or calibration columns: an error naming the episode and frames, not blank maps."""
    root, calib = source
    nan_root = with_nan(root, tmp_path / "nan", key, rows=slice(T + 4, T + 7), dims=dims)
    code, err = run_main(poses_argv(nan_root, tmp_path / "out", calib), monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert "Episode 1" in err and message in err and "frames 4, 5, 6" in err, err[-2000:]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
