"""Reading and writing LeRobotDatasets the way the data tools need: where a dataset lives, quiet
encoding, image values as stored, and the value-map schema kept in ``meta/info.json``."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from lerobot_aim.data import schema

logger = logging.getLogger(__name__)


def resolve_root(root: str | Path | None, repo_id: str) -> Path:
    """The folder of dataset ``repo_id``: ``root`` if given, else ``$HF_LEROBOT_HOME/<repo_id>`` (LeRobot's)."""
    from lerobot.utils.constants import HF_LEROBOT_HOME

    return Path(root) if root else Path(HF_LEROBOT_HOME) / repo_id


def is_within(a: Path, b: Path) -> bool:
    """Whether folder ``a`` is ``b`` or inside it."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or b in a.parents


@contextlib.contextmanager
def quiet_libav():
    """Silence FFmpeg's info chatter while LeRobot encodes.

    LeRobot's ``encode_video_frames`` ends with ``av.logging.restore_default_callback()``, which hands
    PyAV's bundled FFmpeg back its own terminal logger at level INFO, so every later encode prints
    libx264's statistics. Lower that level to ERROR while writing, then restore FFmpeg's default (INFO).
    """
    import av.logging

    av.logging.set_libav_level(av.logging.ERROR)
    try:
        yield
    finally:
        av.logging.set_libav_level(av.logging.INFO)


@contextlib.contextmanager
def no_datasets_progress_bars():
    """Hide the `datasets` "Map" bar that LeRobot's save_episode shows, under our own progress bar."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def to_uint8_hwc(value) -> np.ndarray:
    """An image column value (CHW float in [0, 1] tensor, as LeRobot loads it) -> HWC uint8."""
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    return array


def check_value_map_info(root: Path, features: dict) -> None:
    """Make sure each value-map feature's ``info`` (AIM's schema keys) made it into ``meta/info.json``.

    LeRobot 0.6.1 keeps it: ``LeRobotDatasetMetadata.update_video_info`` (run when episode 0's video
    is written) merges the probed ``video.*`` entries into the existing ``info`` dict rather than
    replacing it, and image features keep ``info`` as given. Should a LeRobot version replace it,
    re-merge it here and rewrite ``info.json`` so that the schema survives.
    """
    from lerobot.datasets.io_utils import load_info, write_info

    info = load_info(root)
    changed = False
    for key, ft in features.items():
        if not key.startswith(schema.VALUE_MAPS_PREFIX):
            continue
        stored = info.features[key].get("info") or {}
        missing = {k: v for k, v in ft["info"].items() if stored.get(k) != v}
        if missing:
            info.features[key]["info"] = {**stored, **missing}
            changed = True
    if changed:
        logger.warning("LeRobot dropped the value-map schema info; restored it.")
        write_info(info, root)
