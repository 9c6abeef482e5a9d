"""lerobot-aim-collect when things go wrong: killed with SIGKILL anywhere, the dataset keeps every saved
episode and a rerun carries on; a damaged dataset is refused; failed attempts are dropped.

The real CLI entry point runs in a subprocess (:data:`KILLER`) that SIGKILLs itself at a chosen call:
mid-episode (an env step), mid-write (LeRobot encoding an episode's video), mid-finalise (LeRobot
flushing the episode metadata, its parquet writer still open) and mid-publish (the dataset renamed
away, its successor not yet in place). Episodes are short failed button presses (``--max_steps=12
--keep_failed=true``) at 32x32 to keep the runs fast.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lerobot_aim.data import schema
from lerobot_aim.data.collect import CollectConfig, collect_dataset, read_collect_log
from lerobot_aim.data.integrity import dataset_problems, is_lerobot_dataset

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
STEPS = 12
TASK = "button-press-v3"
REPO = "local/aim_collect_crash"

# Runs lerobot-aim-collect's main() with sys.argv[1:], SIGKILLing itself at the KILL_AT call:
# "<where>:<n>" kills at the n-th call of <where> (after it returns for "flush" and "publish").
KILLER = r"""
import os, signal, sys

where, count = os.environ["KILL_AT"].split(":")
calls = 0


def kill_at(owner, name, after=False):
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        global calls
        calls += 1
        if calls == int(count) and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == int(count) and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapped)


if where == "step":
    from lerobot_aim.envs.metaworld_env import AIMMetaWorldEnv
    kill_at(AIMMetaWorldEnv, "step")
elif where == "video":
    from lerobot.datasets.dataset_writer import DatasetWriter
    kill_at(DatasetWriter, "_save_episode_video")
elif where == "flush":
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
    kill_at(LeRobotDatasetMetadata, "_flush_metadata_buffer", after=True)
elif where == "publish":  # after the n-th rename of a dataset away (to .<name>.replaced-<id>.old)
    real_replace = os.replace

    def replace(src, dst):
        global calls
        real_replace(src, dst)
        calls += str(dst).endswith(".old")
        if calls == int(count):
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
else:
    raise SystemExit(f"unknown KILL_AT {where!r}")

from lerobot_aim.data.collect import main

sys.argv = ["lerobot-aim-collect", *sys.argv[1:]]
main()
"""


def collect(root: Path, num_episodes: int, kill_at: str | None = None) -> subprocess.CompletedProcess:
    args = [
        f"--repo_id={REPO}",
        f"--root={root}",
        f"--task={TASK}",
        f"--num_episodes={num_episodes}",
        f"--image_size={SIZE}",
        f"--max_steps={STEPS}",
        "--keep_failed=true",
        "--preset=ultrafast",
    ]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    if kill_at is None:
        command = [str(Path(sys.executable).parent / "lerobot-aim-collect"), *args]
    else:
        command, env["KILL_AT"] = [sys.executable, "-c", KILLER, *args], kill_at
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def load(root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(REPO, root=root)


def check_whole(root: Path, num_episodes: int) -> np.ndarray:
    """The dataset loads with ``num_episodes`` episodes of STEPS frames, consistent indices and decodable
    frames in every episode; returns its actions."""
    assert dataset_problems(root) == []
    ds = load(root)
    assert ds.meta.total_episodes == num_episodes and len(ds) == num_episodes * STEPS
    assert np.array_equal(
        np.asarray(ds.hf_dataset["episode_index"]), np.repeat(np.arange(num_episodes), STEPS)
    )
    assert np.array_equal(np.asarray(ds.hf_dataset["index"]), np.arange(num_episodes * STEPS))
    for episode in range(num_episodes):
        ep = ds.meta.episodes[episode]
        assert (int(ep["dataset_from_index"]), int(ep["dataset_to_index"])) == (
            episode * STEPS,
            (episode + 1) * STEPS,
        )
        for index in (episode * STEPS, (episode + 1) * STEPS - 1):
            item = ds[index]
            assert int(item["episode_index"]) == episode
            assert tuple(item[schema.value_map_key("head")].shape) == (3, SIZE, SIZE)
    log = read_collect_log(root)
    assert [e["episode_index"] for e in log["episodes"]] == list(range(num_episodes))
    assert log["attempted_seeds"][TASK] == list(range(num_episodes))  # a lost episode's seed is run again
    return np.stack(ds.hf_dataset["action"])


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}."))


@pytest.mark.slow
def test_sigkill_anywhere_keeps_every_saved_episode(tmp_path):
    root = tmp_path / "crash"
    # Killed while writing the first episode of a new dataset: nothing was published.
    killed = collect(root, 3, kill_at="video:2")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not is_lerobot_dataset(root) and leftovers(root)

    # The first collection again, killed mid-episode after two episodes: both are kept.
    killed = collect(root, 3, kill_at=f"step:{2 * STEPS + 5}")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert leftovers(root) == []  # what the first kill left was removed
    actions = check_whole(root, 2)

    # Appending, killed mid-finalise (LeRobot's episode-metadata writer not yet closed).
    killed = collect(root, 1, kill_at="flush:1")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert leftovers(root)
    np.testing.assert_array_equal(check_whole(root, 2), actions)  # loads as before, without a rerun

    # Appending, killed mid-publish: the dataset renamed away, its successor not in place yet.
    killed = collect(root, 1, kill_at="publish:1")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not root.exists()

    # The same command carries on: the dataset is put back, then appended to.
    result = collect(root, 1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert leftovers(root) == []
    np.testing.assert_array_equal(check_whole(root, 3)[: 2 * STEPS], actions)


@pytest.mark.slow
def test_a_damaged_dataset_is_refused(tmp_path):
    root = tmp_path / "damaged"
    collect_dataset(
        CollectConfig(
            repo_id=REPO,
            root=str(root),
            task=TASK,
            num_episodes=1,
            image_size=SIZE,
            max_steps=STEPS,
            keep_failed=True,
            preset="ultrafast",
        )
    )
    # What a killed LeRobot writer leaves: a data file without its footer.
    (data,) = (root / "data").rglob("*.parquet")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = collect(root, 1)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "is damaged" in result.stderr and "unreadable" in result.stderr and "new --root" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_failed_episodes_are_dropped(tmp_path, caplog):
    root = tmp_path / "failed"
    cfg = CollectConfig(
        repo_id=REPO, root=str(root), task=TASK, num_episodes=1, image_size=SIZE, max_steps=4, max_attempts=2
    )
    with caplog.at_level("INFO", logger="lerobot_aim.data.collect"):
        summary = collect_dataset(cfg)
    assert summary.dropped == [(TASK, 0), (TASK, 1)] and summary.episodes_written == 0
    assert summary.tasks[TASK].attempts == 2 and summary.tasks[TASK].successes == 0
    assert "Dropped button-press-v3 seed 0" in caplog.text
    assert not root.exists() and leftovers(root) == []  # nothing saved: no dataset left behind


def test_an_error_mid_write_leaves_the_dataset_as_it_was(tmp_path, monkeypatch):
    from lerobot.datasets.dataset_writer import DatasetWriter

    root = tmp_path / "error"
    cfg = CollectConfig(
        repo_id=REPO,
        root=str(root),
        task=TASK,
        num_episodes=1,
        image_size=SIZE,
        max_steps=STEPS,
        keep_failed=True,
    )
    collect_dataset(cfg)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(DatasetWriter, "_save_episode_video", broken)
    with pytest.raises(OSError, match="disk full"):
        collect_dataset(cfg)
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert leftovers(root) == []
    shutil.rmtree(root)
