"""``lerobot-aim-annotate``: add spatial value maps to a LeRobotDataset, written as a new dataset.

AIM trains on value maps (``observation.value_maps.<cam>``, see :mod:`lerobot_aim.data.schema`): per
camera and step, a Gaussian heat map of the next interaction region. This command makes them for an
existing dataset and writes a *new* dataset with every feature of the source plus the maps; the
source is only read.

Two sources of interaction events:

- ``--source=poses`` (real arms, or any dataset with end-effector poses): the tool-centre position
  of each arm (``--ee_key`` / ``--ee_slices``) and its gripper state (``--gripper_key`` /
  ``--gripper_indices``, thresholded): a grasp where a gripper closes, a placement where it opens
  (:func:`lerobot_aim.asvm.events.detect_gripper_events`), every arm into the same maps. Arms that
  record joint positions only: ``--fk_urdf`` / ``--fk_frame`` / ``--joint_slices`` compute the
  tool-centre positions by forward kinematics (:mod:`lerobot_aim.data.kinematics`).
- ``--source=contacts`` (simulators): the raw contact signals of :mod:`lerobot_aim.data.schema`
  (``annotation.pad_contact``, ``annotation.object_position``, optional contact and support points,
  ``observation.gripper_closed``): a grasp at the first firm contact while closing, a placement when
  the released object has come to rest, the first contact for tasks without a grasp
  (:func:`~lerobot_aim.asvm.events.detect_contact_events`, the rule ``lerobot-aim-collect`` uses).

At every step the next event's region of each arm (:func:`~lerobot_aim.asvm.events.next_interaction_targets`)
is drawn with that step's calibration (:func:`~lerobot_aim.asvm.render.render_value_map`). The
calibration of each camera comes from the dataset (``observation.camera.<cam>.intrinsics`` /
``.extrinsics`` per step, so moving wrist cameras work) or, for fixed cameras, from a YAML file
(``--calibration=calib.yaml``, format in :data:`lerobot_aim.data.calibration.CALIBRATION_YAML_HELP`).
Flags are :class:`lerobot_aim.data.configs.AnnotateConfig`; list flags are written as lists.

Example (a RoboTwin-like dataset whose 16-d state is ``[xyz, quat, gripper]`` per arm, gripper 1 = open)::

    lerobot-aim-annotate --repo_id=me/robotwin_task --output_repo_id=me/robotwin_task_aim \\
        --source=poses --ee_key=observation.state --ee_slices="[[0,3],[8,11]]" \\
        --gripper_key=observation.state --gripper_indices="[7,15]" --gripper_closed_is_low=true \\
        --calibration=calib.yaml --contact_sheets=true

Videos are decoded and re-encoded through ``LeRobotDataset`` (``--vcodec``, ``--crf``): copied
camera videos therefore differ slightly from the source's (a lossy codec, twice). The output is
written to a staging folder next to ``--output_root`` and renamed into place at the end
(:mod:`lerobot_aim.data.publish`), so an interrupted run leaves no half dataset there; ``--overwrite=true``
replaces only a LeRobot dataset. The dataset card (``README.md``) documents the maps.
"""

import contextlib
import copy
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.configs import parser
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from lerobot_aim.asvm.events import next_interaction_targets
from lerobot_aim.asvm.render import render_value_map
from lerobot_aim.cli import run_command
from lerobot_aim.data import schema
from lerobot_aim.data.calibration import Camera, select_cameras, setup_cameras
from lerobot_aim.data.card import AnnotationSummary, value_map_description, write_dataset_card
from lerobot_aim.data.configs import AnnotateConfig
from lerobot_aim.data.contact_sheets import SheetCollector
from lerobot_aim.data.dataset_io import (
    check_value_map_info,
    is_within,
    quiet_libav,
    resolve_root,
    to_uint8_hwc,
)
from lerobot_aim.data.errors import AnnotationError
from lerobot_aim.data.integrity import is_lerobot_dataset
from lerobot_aim.data.publish import clean_staging, publish, staging_path
from lerobot_aim.data.signals import SignalReader

logger = logging.getLogger(__name__)

DECODE_CHUNK = 128  # frames decoded and written at a time (bounds memory on long episodes)
ANNOTATE_STAGING = "aim-annotate"  # staging folders: .<output name>.aim-annotate-<id>.tmp


def _output_features(src_features: dict, cameras: list[Camera], head: str) -> tuple[dict, list[str]]:
    """Features of the output: the source's (minus LeRobot's defaults and replaced maps) + value maps."""
    from lerobot.utils.constants import DEFAULT_FEATURES

    replaced = [schema.value_map_key(c.name) for c in cameras if schema.value_map_key(c.name) in src_features]
    features = {}
    for key, ft in src_features.items():
        if key in DEFAULT_FEATURES or key in replaced:
            continue
        ft = copy.deepcopy(ft)
        ft["shape"] = tuple(ft["shape"])
        if ft["dtype"] == "video":
            # Drop what LeRobot probed from the source's files; it probes the new ones.
            info = {k: v for k, v in (ft.get("info") or {}).items() if not k.startswith(("video.", "audio."))}
            info.pop("has_audio", None)
            ft["info"] = info or None
        features[key] = ft
    for cam in cameras:
        for key, ft in schema.value_map_features([cam.name], cam.height, cam.width, head_camera=head).items():
            features[key] = {**ft, "dtype": cam.dtype}
    return features, replaced


def _columns(dataset: LeRobotDataset, keys: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
    """Numeric columns of frames [start, stop) as (T, D) float64 arrays."""
    rows = dataset.hf_dataset.select_columns(keys)[start:stop]
    return {k: np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in rows[k]]) for k in keys}


def _decode(
    dataset: LeRobotDataset, key: str, episode: int, timestamps: np.ndarray, backend: str
) -> np.ndarray:
    """Frames of a video feature at episode-relative ``timestamps``: (N, H, W, 3) uint8."""
    from lerobot.datasets.video_utils import decode_video_frames

    meta = dataset.meta
    start = meta.episodes[episode][f"videos/{key}/from_timestamp"]
    path = dataset.root / meta.get_video_file_path(episode, key)
    frames = decode_video_frames(
        path, [float(start + ts) for ts in timestamps], dataset.tolerance_s, backend, return_uint8=True
    )
    return frames.permute(0, 2, 3, 1).numpy()


def _frame_value(ft: dict, value):
    dtype = ft["dtype"]
    if dtype in ("string", "language"):
        return value
    return np.asarray(value).astype(dtype).reshape(ft["shape"])


def annotate_dataset(cfg: AnnotateConfig) -> AnnotationSummary:
    """Write ``cfg.output_repo_id`` (at ``cfg.output_root``): the source dataset plus value maps.

    Returns what was done (also written in the output's ``README.md``). Raises
    :class:`AnnotationError` on bad inputs, before anything is written.
    """
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.utils.import_utils import get_safe_default_video_backend
    from tqdm import tqdm

    started = time.perf_counter()
    src_root = resolve_root(cfg.root, cfg.repo_id)
    out_root = resolve_root(cfg.output_root, cfg.output_repo_id)
    if cfg.root is not None and not src_root.is_dir():
        raise AnnotationError(f"--root={cfg.root!r} does not exist.")
    if src_root.exists() and (is_within(out_root, src_root) or is_within(src_root, out_root)):
        raise AnnotationError(
            f"The output {out_root} overlaps the source dataset {src_root}: the source is never modified; "
            "choose another --output_root / --output_repo_id."
        )
    clean_staging(out_root)
    if out_root.exists() and not cfg.overwrite:
        raise AnnotationError(
            f"The output {out_root} already exists. Choose another --output_repo_id / --output_root, or "
            "pass --overwrite=true to replace it."
        )
    if (
        out_root.exists()
        and not is_lerobot_dataset(out_root)
        and (out_root.is_file() or any(out_root.iterdir()))
    ):
        raise AnnotationError(
            f"--overwrite=true replaces only a LeRobot dataset, and {out_root} is not one (no meta/info.json): "
            "it is left as it is. Choose another --output_root / --output_repo_id, or move that folder away."
        )

    backend = cfg.video_backend or get_safe_default_video_backend()
    src = LeRobotDataset(cfg.repo_id, root=cfg.root, video_backend=backend)
    features, legacy_flips = schema.drop_legacy_flips(src.meta.features)
    if legacy_flips:
        logger.warning(
            "Camera(s) %s carry the flip flags %s of lerobot-aim-collect's schema 1: their calibration columns "
            "already describe the stored images, so the flags are ignored (and not copied).",
            legacy_flips,
            list(schema.LEGACY_FLIP_INFO),
        )
    if src.meta.depth_keys:
        raise AnnotationError(
            f"Depth features {src.meta.depth_keys} are not supported yet; drop them first with "
            "`lerobot-edit-dataset --operation.type=remove_feature --operation.feature_names=[...]`."
        )
    cam_names, head = select_cameras(cfg, features)
    cameras = setup_cameras(cfg, features, cam_names)
    reader = SignalReader(cfg, features)
    out_features, replaced = _output_features(features, cameras, head)
    if replaced:
        logger.warning("The source already has value maps %s: they are replaced.", replaced)
    use_videos = any(ft["dtype"] == "video" for ft in out_features.values())
    keys = _Keys(
        signals=reader.keys,
        calibration=[
            k
            for c in cameras
            if c.per_step
            for k in (schema.intrinsics_key(c.name), schema.extrinsics_key(c.name))
        ],
        videos=[k for k, ft in features.items() if ft["dtype"] == "video" and k in out_features],
        images=[k for k, ft in features.items() if ft["dtype"] == "image" and k in out_features],
        maps=[schema.value_map_key(c.name) for c in cameras],
        features=out_features,
    )

    summary = AnnotationSummary(
        source_repo_id=cfg.repo_id,
        output_repo_id=cfg.output_repo_id,
        source=cfg.source,
        cameras=[c.name for c in cameras],
        head_camera=head,
        image_sizes={c.name: (c.height, c.width) for c in cameras},
        calibration={c.name: c.origin for c in cameras},
        radius=cfg.radius,
        signals=list(reader.descriptions),
        video_codec=cfg.vcodec if use_videos else None,
    )

    _check_finite_inputs(src, reader, cameras, keys)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = staging_path(out_root, ANNOTATE_STAGING)
    rgb_encoder = (
        RGBEncoderConfig(vcodec=cfg.vcodec, crf=cfg.crf, g=2, preset=cfg.preset) if use_videos else None
    )
    dst = None
    try:
        with quiet_libav():
            dst = LeRobotDataset.create(
                repo_id=cfg.output_repo_id,
                fps=src.meta.fps,
                features=out_features,
                root=tmp_root,
                robot_type=src.meta.robot_type,
                use_videos=use_videos,
                rgb_encoder=rgb_encoder,
                image_writer_threads=cfg.image_writer_threads,
                video_backend=backend,
            )
            for episode in tqdm(range(src.meta.total_episodes), desc="Annotating", unit="episode"):
                _annotate_episode(cfg, src, dst, episode, cameras, reader, keys, summary, tmp_root, backend)
            dst.finalize()
        check_value_map_info(tmp_root, out_features)
        leftover = tmp_root / "images"
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        summary.seconds = time.perf_counter() - started
        write_dataset_card(tmp_root, summary, license=cfg.license)
        publish(tmp_root, out_root)
    except BaseException:
        if dst is not None and dst.writer is not None:
            with contextlib.suppress(Exception):
                dst.writer.stop_image_writer()
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - started
    logger.info(
        "Wrote %s at %s: %d episodes, %d frames, events %s, in %.1f s.",
        cfg.output_repo_id,
        out_root,
        summary.num_episodes,
        summary.num_frames,
        summary.event_counts(),
        summary.seconds,
    )
    if summary.episodes_without_events:
        logger.warning(
            "%d episode(s) have no interaction event (blank value maps): %s",
            len(summary.episodes_without_events),
            summary.episodes_without_events[:20],
        )
    if cfg.push_to_hub:
        out = LeRobotDataset(cfg.output_repo_id, root=out_root)
        out.push_to_hub(
            tags=["AIM", "value-maps", "ASVM"],
            license=cfg.license,
            private=cfg.private,
            dataset_description=value_map_description(summary),
        )
    return summary


@dataclass
class _Keys:
    """Which source features play which part, fixed for the whole dataset."""

    signals: list[str]  # numeric features the events come from
    calibration: list[str]  # per-step calibration columns of the annotated cameras
    videos: list[str]  # video features, decoded and re-encoded
    images: list[str]  # image features, copied as uint8 images
    maps: list[str]  # the value maps made here
    features: dict  # the output's features

    @property
    def copied(self) -> list[str]:
        """Features read from the parquet rows (every feature of the source but its videos)."""
        return [k for k in self.features if k not in self.videos and k not in self.maps]


def _check_finite_inputs(
    src: LeRobotDataset, reader: SignalReader, cameras: list[Camera], keys: _Keys
) -> None:
    """Refuse, before anything is written, a dataset whose signals or calibration hold NaN or inf."""
    for episode in range(src.meta.total_episodes):
        ep_meta = src.meta.episodes[episode]
        start, stop = int(ep_meta["dataset_from_index"]), int(ep_meta["dataset_to_index"])
        columns = _columns(src, [*keys.signals, *keys.calibration], start, stop)
        reader.check_finite(columns, episode)
        for cam in cameras:
            cam.check_finite(columns, episode)


def _annotate_episode(
    cfg: AnnotateConfig,
    src: LeRobotDataset,
    dst: LeRobotDataset,
    episode: int,
    cameras: list[Camera],
    reader: SignalReader,
    keys: _Keys,
    summary: AnnotationSummary,
    out_root: Path,
    backend: str,
) -> None:
    """Copy one episode into ``dst`` with its value maps (and write its contact sheet)."""
    ep_meta = src.meta.episodes[episode]
    start, stop = int(ep_meta["dataset_from_index"]), int(ep_meta["dataset_to_index"])
    num_steps = stop - start
    columns = _columns(src, [*keys.signals, *keys.calibration, "timestamp"], start, stop)
    events = reader.events(reader.read(columns), src.meta.fps)
    for event in events:
        summary.events[(event.arm, event.kind)] += 1
    if not events:
        summary.episodes_without_events.append(episode)
    targets = next_interaction_targets(num_steps, events, after_last=cfg.after_last)
    sheet = SheetCollector(cfg, cameras, num_steps) if cfg.contact_sheets else None
    timestamps = columns["timestamp"][:, 0]
    copied = [*keys.copied, "task_index"]
    for chunk_start in range(0, num_steps, DECODE_CHUNK):
        chunk = range(chunk_start, min(chunk_start + DECODE_CHUNK, num_steps))
        rows = src.hf_dataset.select_columns(copied)[start + chunk.start : start + chunk.stop]
        videos = {
            key: _decode(src, key, episode, timestamps[chunk.start : chunk.stop], backend)
            for key in keys.videos
        }
        for i, t in enumerate(chunk):
            frame: dict[str, Any] = {"task": src.meta.tasks.iloc[int(rows["task_index"][i])].name}
            for key in keys.copied:
                value = rows[key][i]
                frame[key] = (
                    to_uint8_hwc(value) if key in keys.images else _frame_value(keys.features[key], value)
                )
            for key in keys.videos:
                frame[key] = videos[key][i]
            for cam in cameras:
                calib = cam.at(columns, t)
                value_map = render_value_map(targets[t], calib, radius=cfg.radius)
                frame[schema.value_map_key(cam.name)] = schema.value_map_frame(value_map)
                if sheet is not None:
                    sheet.add(cam.name, t, frame[schema.image_key(cam.name)], value_map, targets[t], calib)
            dst.add_frame(frame)
    # Encode in this process: a process pool per episode costs more than it saves on small episodes.
    dst.save_episode(parallel_encoding=False)
    if sheet is not None:
        path = sheet.write(out_root, episode)
        summary.contact_sheets.append(path.relative_to(out_root).as_posix())
    summary.num_episodes += 1
    summary.num_frames += num_steps


@parser.wrap()
def annotate(cfg: AnnotateConfig) -> AnnotationSummary:
    """``lerobot-aim-annotate``: :func:`annotate_dataset` with the flags of :class:`AnnotateConfig`."""
    return annotate_dataset(cfg)


def main() -> None:
    """Console entry point (``lerobot-aim-annotate``)."""
    from lerobot.utils.utils import init_logging

    init_logging()
    run_command(annotate, schema.ANNOTATE_COMMAND)


if __name__ == "__main__":
    main()
