"""What AIM imagines along a recorded episode: real frames, predicted future RGB, predicted value maps.

    lerobot-aim-viz --policy.path=<checkpoint> --dataset.repo_id=<value-map dataset> \
        [--dataset.root=DIR] --episode=0 --output_dir=outputs/viz

The policy acts along the episode as it would online (its context is the recorded frames); each
time it plans a chunk, the imagined future is decoded (after its context, as the codec needs). Every
step of the MP4 shows, left to right: the real T-pose canvas (with the recorded value map overlaid
when the dataset has one), the imagined frame of the state that this step's action leads to, and
the imagined value map overlaid on it. The PNG contact sheet shows every ``sheet_every``-th step of
the same panels, stacked.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lerobot.configs import parser
from tqdm import tqdm

from lerobot_aim.cli import InputError, run_command
from lerobot_aim.data.schema import IMAGES_PREFIX, image_key, value_map_key
from lerobot_aim.processor_aim import OBS_RGB_CANVAS, OBS_VALUE_CANVAS
from lerobot_aim.rl.rewards import value_frame_index
from lerobot_aim.viz.contact_sheet import contact_sheet, overlay_value_map, stack_sheets


@dataclass
class VizDatasetConfig:
    # Dataset id (a local one needs --dataset.root).
    repo_id: str = ""
    # Local folder of the dataset.
    root: str | None = None


@dataclass
class VizPolicyConfig:
    # Folder or Hub id of an AIM checkpoint (LeRobot layout, with its processors).
    path: str = ""


class VizConfigError(InputError):
    """A setting of lerobot-aim-viz that cannot work, with what to pass instead."""


@dataclass
class VizConfig:
    policy: VizPolicyConfig = field(default_factory=VizPolicyConfig)
    dataset: VizDatasetConfig = field(default_factory=VizDatasetConfig)
    # Episode to visualise.
    episode: int = 0
    # Steps to show (0: the whole episode).
    max_steps: int = 0
    # Where the MP4 and PNG go.
    output_dir: str = "outputs/viz"
    # One contact-sheet tile every this many steps.
    sheet_every: int = 8
    # Seed of the sampling noise.
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.policy.path or not self.dataset.repo_id:
            raise VizConfigError("lerobot-aim-viz needs --policy.path=<checkpoint> and --dataset.repo_id=<dataset>.")
        if self.max_steps < 0 or self.sheet_every < 1:
            raise VizConfigError("--max_steps must be >= 0 and --sheet_every >= 1.")


@dataclass
class VizOutputs:
    video: Path
    sheet: Path
    num_steps: int


def _to_uint8(canvas: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((canvas.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def visualise_episode(
    policy, preprocessor, dataset, episode: int, output_dir: Path, max_steps: int = 0, sheet_every: int = 8,
    seed: int = 0,
) -> VizOutputs:
    """Run ``policy`` along ``episode`` of ``dataset`` and write ``episode_<i>.mp4`` and ``.png``."""
    from lerobot.utils.io_utils import write_video

    cameras = policy.config.cameras
    meta = dataset.meta
    start = int(meta.episodes["dataset_from_index"][episode])
    stop = int(meta.episodes["dataset_to_index"][episode])
    if max_steps:
        stop = min(stop, start + max_steps)
    has_maps = all(value_map_key(c) in meta.features for c in cameras)
    torch.manual_seed(seed)
    policy.reset()
    real, imagined, imagined_maps, recorded_maps = [], [], [], []
    step_in_chunk = 0
    for index in tqdm(range(start, stop), desc=f"episode {episode}"):
        item = dataset[index]
        obs = {image_key(c): item[image_key(c)][None] for c in cameras}
        if has_maps:
            obs.update({value_map_key(c): item[value_map_key(c)][None] for c in cameras})
        obs["task"] = [item["task"]]
        batch = preprocessor(obs)
        planned = not policy._queue
        with torch.no_grad():
            policy.select_action(batch)
        if planned:
            future_rgb = policy.decode_predicted_rgb()[0]  # (F, 3, H, W) in [0, 1]
            future_maps = policy.decode_value_maps()[0].mean(1) if policy.model.value is not None else None
            step_in_chunk = 0
        else:
            step_in_chunk += 1
        frame = value_frame_index(step_in_chunk, policy.config.frame_stride, future_rgb.shape[0])
        real.append(_to_uint8(batch[OBS_RGB_CANVAS][0]))
        imagined.append(_to_uint8(future_rgb[frame] * 2 - 1))
        imagined_maps.append(
            future_maps[frame].cpu().numpy()
            if future_maps is not None
            else np.zeros(real[-1].shape[:2], np.float32)
        )
        recorded = batch.get(OBS_VALUE_CANVAS)
        recorded_maps.append(
            ((recorded[0].mean(0) + 1) / 2).cpu().numpy()
            if recorded is not None
            else np.zeros_like(imagined_maps[-1])
        )

    real_panel = [overlay_value_map(f, m) for f, m in zip(real, recorded_maps, strict=True)]
    value_panel = [overlay_value_map(f, m) for f, m in zip(imagined, imagined_maps, strict=True)]
    frames = [np.concatenate(p, axis=1) for p in zip(real_panel, imagined, value_panel, strict=True)]
    output_dir.mkdir(parents=True, exist_ok=True)
    video = output_dir / f"episode_{episode}.mp4"
    write_video(str(video), frames, int(meta.fps))
    blank = np.zeros((len(real), *real[0].shape[:2]), np.float32)
    rows = [
        contact_sheet(np.stack(real), np.stack(recorded_maps), every=sheet_every, scale=2),
        contact_sheet(np.stack(imagined), blank, every=sheet_every, scale=2),
        contact_sheet(np.stack(imagined), np.stack(imagined_maps), every=sheet_every, scale=2),
    ]
    sheet = output_dir / f"episode_{episode}.png"
    stack_sheets(rows, path=sheet)
    return VizOutputs(video, sheet, len(frames))


@parser.wrap()
def viz(cfg: VizConfig) -> VizOutputs:
    """``lerobot-aim-viz``: load the checkpoint and the dataset, write the episode's MP4 and PNG."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_aim.modeling_aim import AIMPolicy

    policy = AIMPolicy.from_pretrained(cfg.policy.path)
    preprocessor, _ = make_pre_post_processors(policy.config, pretrained_path=str(cfg.policy.path))
    dataset = LeRobotDataset(cfg.dataset.repo_id, root=cfg.dataset.root)
    missing = [image_key(c) for c in policy.config.cameras if image_key(c) not in dataset.meta.features]
    if missing:
        have = sorted(k for k in dataset.meta.features if k.startswith(IMAGES_PREFIX))
        raise VizConfigError(
            f"The dataset {cfg.dataset.repo_id} has no {', '.join(missing)}: the policy plans from cameras "
            f"{policy.config.cameras}, the dataset records {have}. Use the dataset the policy was trained on, "
            "or one recorded with the same cameras."
        )
    if not 0 <= cfg.episode < dataset.meta.total_episodes:
        raise VizConfigError(
            f"--episode={cfg.episode}: the dataset has episodes 0..{dataset.meta.total_episodes - 1}."
        )
    out = visualise_episode(
        policy, preprocessor, dataset, cfg.episode, Path(cfg.output_dir), cfg.max_steps, cfg.sheet_every, cfg.seed
    )
    logging.info("Wrote %s and %s (%d steps)", out.video, out.sheet, out.num_steps)
    print(f"Video: {out.video}\nContact sheet: {out.sheet}")
    return out


def main() -> None:
    from lerobot.utils.utils import init_logging

    import lerobot_aim  # noqa: F401  (registers the policy for from_pretrained)

    init_logging()
    run_command(viz, "lerobot-aim-viz")


if __name__ == "__main__":
    main()
