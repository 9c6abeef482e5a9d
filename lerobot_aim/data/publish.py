"""Writing a dataset folder so that it always holds a complete dataset: stage, then publish by renaming.

LeRobot writes a dataset in place and keeps shared files open between episodes (the data and
episode-metadata parquet writers; each episode's video is concatenated onto the last video file): a
process killed while writing (SIGKILL, power loss, the OOM killer) leaves parquet files without their
footer and an ``info.json`` that counts what is not there. The tools of this package therefore never
write into a published dataset:

- a new dataset is written into a staging folder next to its root and renamed into place once
  complete (:func:`publish`);
- an existing dataset is changed in a staged copy (:func:`staged_update`): the metadata files that
  LeRobot rewrites (everything in ``meta/`` but ``meta/episodes/``) are copied, every other file is
  hard-linked. This relies on LeRobot 0.6.1's ``LeRobotDataset.resume``, which writes the episodes it
  adds into new data, video and episode-metadata files and never into existing ones; the staged copy
  checks that the linked files are untouched before it is published.

A staging folder is named ``.<root name>.<purpose>-<id>.tmp`` and the replaced dataset, for the instant
between the two renames of :func:`publish`, ``.<root name>.replaced-<id>.old``. After a kill,
:func:`clean_staging` puts back a replaced dataset whose successor was not published and removes
staging folders (nothing in them was published).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

STAGING_SUFFIX = ".tmp"
REPLACED_SUFFIX = ".old"
META_DIR = "meta"
EPISODES_META_DIR = "meta/episodes"


class StagingError(RuntimeError):
    """A staged update could not be published safely (the published dataset is unchanged)."""


def staging_path(root: Path, purpose: str) -> Path:
    """A fresh staging folder name next to ``root`` (not created)."""
    return root.parent / f".{root.name}.{purpose}-{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}"


def _replaced_path(root: Path) -> Path:
    return root.parent / f".{root.name}.replaced-{uuid.uuid4().hex[:8]}{REPLACED_SUFFIX}"


def _leftovers(root: Path, suffix: str) -> list[Path]:
    if not root.parent.is_dir():
        return []
    return sorted(p for p in root.parent.glob(f".{root.name}.*{suffix}") if p.is_dir())


def clean_staging(root: Path) -> list[Path]:
    """Undo what a killed run left next to ``root``; returns the folders removed.

    A dataset replaced by :func:`publish` whose successor never took its place is renamed back to
    ``root``; staging folders are removed.
    """
    root = Path(root)
    replaced = _leftovers(root, REPLACED_SUFFIX)
    if replaced and not root.exists():
        os.replace(replaced[-1], root)
        logger.warning("Restored %s from %s (a run was killed while publishing).", root, replaced[-1].name)
        replaced = replaced[:-1]
    removed = replaced + _leftovers(root, STAGING_SUFFIX)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if removed:
        logger.warning(
            "Removed %s: unpublished work of a run that was interrupted.", [p.name for p in removed]
        )
    return removed


def publish(staged: Path, root: Path, durable: frozenset[Path] = frozenset()) -> None:
    """Move the complete dataset ``staged`` to ``root``, replacing what is there only once it is in place.

    ``root`` may be absent, an empty folder or a dataset (the caller decides whether it may be replaced).
    Files of ``staged`` are flushed to disk first, but those in ``durable`` (hard links to published ones).
    """
    staged, root = Path(staged), Path(root)
    _fsync_tree(staged, skip=durable)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    replaced = None
    if root.exists():
        replaced = _replaced_path(root)
        os.replace(root, replaced)
    try:
        os.replace(staged, root)
    except BaseException:
        if replaced is not None:
            os.replace(replaced, root)
        raise
    _fsync_dir(root.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


@contextlib.contextmanager
def staged_update(root: Path, purpose: str) -> Iterator[Path]:
    """Yield a staged copy of the dataset at ``root`` to change, published when the block ends.

    When ``root`` holds no dataset yet, the yielded path does not exist: create the new dataset
    there (``LeRobotDataset.create`` makes the folder itself). If the block raises, the staged copy is
    removed and ``root`` is untouched.
    """
    root = Path(root)
    staged = staging_path(root, purpose)
    linked: dict[Path, tuple[int, int]] = {}
    try:
        if (root / META_DIR / "info.json").is_file():
            linked = _copy_for_update(root, staged)
        yield staged
        changed = [str(p.relative_to(staged)) for p, stat in linked.items() if _signature(p) != stat]
        if changed:
            raise StagingError(
                f"Files {changed[:5]} of {root} were changed in place while adding to its staged copy (this LeRobot "
                "version does not write new episodes into new files); nothing was published."
            )
        publish(staged, root, durable=frozenset(linked))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _copy_for_update(root: Path, staged: Path) -> dict[Path, tuple[int, int]]:
    """Copy LeRobot's rewritten metadata files, hard-link the others; returns {linked: signature}."""
    linked = {}
    for source in root.rglob("*"):
        if source.is_dir():
            continue
        relative = source.relative_to(root)
        target = staged / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        rewritten = relative.parts[0] == META_DIR and not relative.as_posix().startswith(
            EPISODES_META_DIR + "/"
        )
        if rewritten:
            shutil.copy2(source, target)
            continue
        try:
            os.link(source, target)
        except OSError:  # a file system without hard links: copy
            shutil.copy2(source, target)
            continue
        linked[target] = _signature(target)
    return linked


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _fsync_tree(root: Path, skip: frozenset[Path]) -> None:
    """Flush the files and folders of ``root`` to disk (a rename must not publish unwritten data)."""
    for path in [*root.rglob("*"), root]:
        if path in skip:
            continue
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
