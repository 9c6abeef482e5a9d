"""lerobot-aim-collect when things go wrong: crashes keep every saved episode, failed attempts are dropped."""

import pytest

from lerobot_aim.data import schema
from lerobot_aim.data.collect import CollectConfig, collect_dataset, read_collect_log

SIZE = 64
TASK = "button-press-v3"
REPO = "local/aim_collect_test"


def _load(root, repo_id=REPO):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root)


def test_crash_mid_episode_keeps_the_saved_episodes(tmp_path, monkeypatch):
    from lerobot_aim.envs.metaworld_env import AIMMetaWorldEnv

    episodes = {"n": 0}
    reset, step = AIMMetaWorldEnv.reset, AIMMetaWorldEnv.step

    def counting_reset(self, *args, **kwargs):
        episodes["n"] += 1
        return reset(self, *args, **kwargs)

    def crashing_step(self, action):
        if episodes["n"] == 2 and self._elapsed_steps == 5:
            raise RuntimeError("simulated crash")
        return step(self, action)

    monkeypatch.setattr(AIMMetaWorldEnv, "reset", counting_reset)
    monkeypatch.setattr(AIMMetaWorldEnv, "step", crashing_step)
    root = tmp_path / "crash"
    # Short failed episodes, kept: fast.
    cfg = CollectConfig(
        repo_id=REPO,
        root=str(root),
        task=TASK,
        num_episodes=3,
        image_size=SIZE,
        max_steps=12,
        keep_failed=True,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect_dataset(cfg)
    ds = _load(root)
    assert ds.meta.total_episodes == 1 and len(ds) == 12
    assert tuple(ds[11][schema.value_map_key("head")].shape) == (3, SIZE, SIZE)
    assert read_collect_log(root)["attempted_seeds"] == {TASK: [0]}
    assert not (root / "images").exists() or not any((root / "images").rglob("*.png"))

    # Rerunning the command resumes: the interrupted seed is run again.
    monkeypatch.undo()
    summary = collect_dataset(CollectConfig(**{**cfg.__dict__, "num_episodes": 1}))
    assert summary.resumed and summary.total_episodes == 2
    assert read_collect_log(root)["attempted_seeds"] == {TASK: [0, 1]}
    assert len(_load(root)) == 24


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
    assert not root.exists()  # nothing saved: no empty dataset left behind
