"""Is a LeRobotDataset folder whole? What a tool checks before it appends to or reads a dataset.

A dataset that a killed writer left behind (parquet files without footer, ``info.json`` counting
episodes that are not there, episode indices that do not match the metadata) must be refused, not
appended to: :func:`dataset_problems` lists what is wrong, from the files alone (no video is decoded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INFO_FILE = "meta/info.json"
EPISODES_DIR = "meta/episodes"
DATA_DIR = "data"


def is_lerobot_dataset(root: Path) -> bool:
    """Whether ``root`` holds a LeRobot dataset (its ``meta/info.json``)."""
    return (Path(root) / INFO_FILE).is_file()


def dataset_problems(root: Path) -> list[str]:
    """What is wrong with the LeRobot dataset at ``root`` (empty when it is whole).

    Checks that ``meta/info.json`` parses, every parquet file of ``data/`` and ``meta/episodes/`` has
    its footer, the episode metadata lists episodes ``0 .. total_episodes - 1`` with contiguous frame
    ranges covering ``total_frames``, the data holds exactly those frames with matching
    ``episode_index`` and ``index`` columns, and every video file the episodes name exists.
    """
    from lerobot.datasets.io_utils import load_info

    root = Path(root)
    try:
        info = load_info(root)
    except Exception as error:  # noqa: BLE001 (any parse failure is a damaged dataset)
        return [f"{INFO_FILE} cannot be read ({type(error).__name__}: {error})"]
    problems = []
    episodes = _read_columns(root, EPISODES_DIR, _episode_columns(info), problems)
    data = _read_columns(root, DATA_DIR, ["episode_index", "index"], problems)
    if problems:
        return problems
    num_episodes = 0 if episodes is None else len(episodes["episode_index"])
    if num_episodes != info.total_episodes:
        problems.append(
            f"{INFO_FILE} counts {info.total_episodes} episodes, {EPISODES_DIR} lists {num_episodes}"
        )
    num_frames = 0 if data is None else len(data["index"])
    if num_frames != info.total_frames:
        problems.append(f"{INFO_FILE} counts {info.total_frames} frames, {DATA_DIR}/ holds {num_frames}")
    if problems or episodes is None:
        return problems
    order = np.argsort(episodes["episode_index"], kind="stable")
    index = episodes["episode_index"][order]
    starts, stops = episodes["dataset_from_index"][order], episodes["dataset_to_index"][order]
    if not np.array_equal(index, np.arange(num_episodes)):
        problems.append(f"episode indices are {index.tolist()[:10]}..., not 0..{num_episodes - 1}")
    elif starts[0] != 0 or stops[-1] != num_frames or not np.array_equal(starts[1:], stops[:-1]):
        problems.append(
            "the episodes' frame ranges (dataset_from_index / dataset_to_index) are not contiguous"
        )
    elif not np.array_equal(np.sort(data["index"]), np.arange(num_frames)):
        problems.append(f"the data's `index` column is not 0..{num_frames - 1}")
    else:
        expected = np.repeat(np.arange(num_episodes), stops - starts)
        if not np.array_equal(data["episode_index"][np.argsort(data["index"])], expected):
            problems.append("the data's `episode_index` column does not match the episodes' frame ranges")
    problems += _missing_videos(root, info, episodes)
    return problems


def _episode_columns(info) -> list[str]:
    columns = ["episode_index", "dataset_from_index", "dataset_to_index"]
    for key, feature in info.features.items():
        if feature.get("dtype") == "video":
            columns += [f"videos/{key}/chunk_index", f"videos/{key}/file_index"]
    return columns


def _read_columns(
    root: Path, folder: str, columns: list[str], problems: list[str]
) -> dict[str, np.ndarray] | None:
    """Integer ``columns`` (those present) of every parquet file under ``folder``, concatenated in file
    order; None without files. An unreadable file (no footer: a writer was killed) is added to ``problems``."""
    import pyarrow.parquet as pq

    parts = []
    for path in sorted((root / folder).rglob("*.parquet")):
        try:
            present = [c for c in columns if c in pq.read_schema(path).names]
            parts.append(pq.read_table(path, columns=present))
        except Exception as error:  # noqa: BLE001 (a torn file fails in many ways)
            problems.append(f"{path.relative_to(root)} is unreadable ({type(error).__name__}: {error})")
    if not parts or problems:
        return None
    names = parts[0].column_names
    return {n: np.concatenate([part.column(n).to_numpy() for part in parts]).astype(np.int64) for n in names}


def _missing_videos(root: Path, info, episodes: dict[str, np.ndarray]) -> list[str]:
    if not info.video_path:
        return []
    missing = set()
    for key, feature in info.features.items():
        if feature.get("dtype") != "video" or f"videos/{key}/chunk_index" not in episodes:
            continue
        for chunk, file in zip(
            episodes[f"videos/{key}/chunk_index"], episodes[f"videos/{key}/file_index"], strict=True
        ):
            path = info.video_path.format(video_key=key, chunk_index=int(chunk), file_index=int(file))
            if not (root / path).is_file():
                missing.add(path)
    return [f"video file {path} is missing" for path in sorted(missing)]
