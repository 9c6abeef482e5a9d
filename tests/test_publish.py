"""Staged updates of a dataset folder: published whole by renaming, or not at all."""

import os

import pytest

from lerobot_aim.data.publish import StagingError, clean_staging, publish, staged_update, staging_path


def make_dataset(root):
    (root / "meta" / "episodes").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "meta" / "info.json").write_text("v1")
    (root / "meta" / "episodes" / "file-000.parquet").write_text("episodes 0")
    (root / "data" / "file-000.parquet").write_text("frames 0")
    return root


def files(root):
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_staged_update_publishes_only_a_finished_block(tmp_path):
    root = make_dataset(tmp_path / "ds")
    before = files(root)
    with pytest.raises(RuntimeError, match="killed"), staged_update(root, "test") as staged:
        (staged / "meta" / "info.json").write_text("v2")  # a copy: the published one is untouched
        (staged / "data" / "file-001.parquet").write_text("frames 1")
        raise RuntimeError("killed")
    assert files(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with staged_update(root, "test") as staged:
        (staged / "meta" / "info.json").write_text("v2")
        (staged / "data" / "file-001.parquet").write_text("frames 1")
    assert files(root) == {**before, "meta/info.json": "v2", "data/file-001.parquet": "frames 1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_linked_file_changed_in_place_is_not_published(tmp_path):
    root = make_dataset(tmp_path / "ds")
    with pytest.raises(StagingError, match="changed in place"), staged_update(root, "test") as staged:
        (staged / "meta" / "info.json").write_text("v2")
        linked = staged / "data" / "file-000.parquet"  # the published file itself (one inode)
        linked.write_text(linked.read_text() + " and more")
    assert (root / "meta" / "info.json").read_text() == "v1"


def test_clean_staging_puts_back_a_dataset_renamed_away(tmp_path):
    root = make_dataset(tmp_path / "ds")
    before = files(root)
    staged = staging_path(root, "test")
    staged.mkdir()
    replaced = tmp_path / ".ds.replaced-0000.old"
    os.replace(root, replaced)  # a kill between the two renames of publish()
    assert not root.exists()
    assert clean_staging(root) == [staged]
    assert files(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_publish_a_new_dataset_into_an_empty_folder(tmp_path):
    staged = make_dataset(tmp_path / "new")
    (tmp_path / "ds").mkdir()
    publish(staged, tmp_path / "ds")
    assert files(tmp_path / "ds")["meta/info.json"] == "v1" and not staged.exists()
