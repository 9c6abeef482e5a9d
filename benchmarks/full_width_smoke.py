"""The paper-scale path at its real shapes, on a CPU: full width, reduced depth, random weights.

    python -m benchmarks.full_width_smoke --preset=aim_wan22_5b [--num_layers=1]
    python -m benchmarks.full_width_smoke --preset=aim_wan22_5b_robotwin

The preset's widths exactly (RGB and value streams 3072 wide, 24 x 128 attention, ffn 14336, action
stream 1024), ``--num_layers`` blocks per stream, bf16 and gradient checkpointing as the preset sets
them, the Wan2.2-TI2V-5B VAE config and a 4096-wide UMT5 (:mod:`benchmarks.wan22_local`), three views
packed T-pose at the preset's image size, read from a LeRobotDataset written locally. In order:

1. one Stage I step through lerobot-train's own pieces: ``make_policy`` on the dataset's metadata,
   ``make_pre_post_processors``, the policy's optimizer preset, an ``Accelerator`` with the mixed
   precision lerobot-train derives from ``policy.dtype``, and lerobot-train's ``update_policy``;
2. one action chunk with the context cache (``select_action``);
3. one GRPO update of the action stream on two flow-SDE chunks (``rl.grpo.grpo_update``);
4. ``save_pretrained`` and ``AIMPolicy.from_pretrained`` from that folder, weights compared.

Writes ``results/full_width_smoke_<preset>_L<layers>_<machine>.{json,md}``: latent grid and token
counts, losses, seconds and peak resident memory of each stage.
"""

import gc
import hashlib
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lerobot.configs import parser

from benchmarks.common import check_at_least_one, check_preset, device_tag, write
from benchmarks.wan22_local import write_wan22_folder
from lerobot_aim import load_preset
from lerobot_aim.cli import run_command

CAMERAS = {
    "aim_wan22_5b": ["head", "wrist_left", "wrist_right"],
    "aim_wan22_5b_robotwin": ["head_camera", "left_camera", "right_camera"],
}
# What the dataset records: RoboTwin's cameras give 240 x 320 (resized by the AIM preprocessor).
RECORDED_SIZE = {"aim_wan22_5b": (256, 320), "aim_wan22_5b_robotwin": (240, 320)}


@dataclass
class FullWidthSmokeConfig:
    # Paper-scale preset run at its real widths: aim_wan22_5b or aim_wan22_5b_robotwin.
    preset: str = "aim_wan22_5b"
    # Blocks per stream.
    num_layers: int = 1
    # Denoising steps per chunk (the preset uses 10).
    denoising_steps: int = 2
    # Where model folders and the dataset go (None: a temporary folder, removed at the end).
    workdir: str | None = None

    def __post_init__(self) -> None:
        check_preset(self.preset, choices=sorted(CAMERAS))
        check_at_least_one(num_layers=self.num_layers, denoising_steps=self.denoising_steps)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fingerprint(state_dict: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def training_batch(dataset, preprocessor) -> dict:
    """lerobot-train's batch: a collated sample, camera frames to [0, 1], the policy's preprocessor."""
    batch = torch.utils.data.default_collate([dataset[0]])
    for key in dataset.meta.camera_keys:
        if batch[key].dtype == torch.uint8:
            batch[key] = batch[key].float() / 255
    return preprocessor(batch)


def observation(frame: dict, preprocessor) -> dict:
    """One env step's observation (a dataset frame's images and task) through the preprocessor."""
    images = {
        k: v[None].float() / (255 if v.dtype == torch.uint8 else 1)
        for k, v in frame.items()
        if k.startswith("observation.images.")
    }
    return preprocessor(images | {"task": [frame["task"]]})


@parser.wrap()
def full_width_smoke(cfg: FullWidthSmokeConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return run(cfg, Path(cfg.workdir or tmp))


def run(cfg: FullWidthSmokeConfig, workdir: Path) -> dict:
    from accelerate import Accelerator
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.policies import make_policy, make_pre_post_processors
    from lerobot.scripts.lerobot_train import update_policy
    from lerobot.utils.logging_utils import AverageMeter, MetricsTracker
    from safetensors.torch import load_file

    from lerobot_aim.data.synthetic import make_synthetic_dataset
    from lerobot_aim.model.sampling import ActionTrajectory
    from lerobot_aim.modeling_aim import AIMPolicy
    from lerobot_aim.rl.grpo import UpdateSettings, freeze_all_but_action_stream, grpo_update
    from lerobot_aim.rl.rollout import StochasticActor

    stages, t0 = {}, time.perf_counter()

    def stage(name: str, **extra) -> None:
        nonlocal t0
        stages[name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_gib": round(peak_rss_gib(), 2),
            **extra,
        }
        print(name, stages[name], flush=True)
        t0 = time.perf_counter()

    folder = write_wan22_folder(workdir / "wan22", num_layers=cfg.num_layers)
    dataset_root = workdir / "data"
    make_synthetic_dataset(
        dataset_root,
        repo_id="local/full_width",
        num_episodes=1,
        episode_length=16,
        cameras=CAMERAS[cfg.preset],
        image_size=RECORDED_SIZE[cfg.preset],
    )
    stage("write_models_and_dataset")

    config = load_preset(
        cfg.preset,
        device="cpu",
        num_layers=cfg.num_layers,
        codec_path=str(folder),
        text_encoder_path=str(folder),
        wan_path=str(folder),
        num_inference_steps=cfg.denoising_steps,
    )
    frames = LeRobotDataset("local/full_width", root=dataset_root)
    dataset = LeRobotDataset(
        "local/full_width", root=dataset_root, delta_timestamps=resolve_delta_timestamps(config, frames.meta)
    )
    policy = make_policy(config, ds_meta=dataset.meta)
    preprocessor, _ = make_pre_post_processors(config, dataset_stats=dataset.meta.stats)
    params = {
        name: sum(p.numel() for p in getattr(policy.model, name).parameters())
        for name in ("rgb", "value", "action")
    }
    stage("make_policy", parameters=params)

    # 1. Stage I: lerobot-train's update_policy with lerobot-train's accelerator settings.
    batch = training_batch(dataset, preprocessor)
    with torch.no_grad():
        latents = policy._encode_video(batch["observation.aim.rgb"][:, :1])
    grid = tuple(latents.shape[-2:])
    tokens_per_frame = grid[0] * grid[1] // (config.patch_size[1] * config.patch_size[2])
    accelerator = Accelerator(mixed_precision={"bfloat16": "bf16"}.get(config.dtype, "no"), cpu=True)
    optimizer = config.get_optimizer_preset().build(policy.get_optim_params())
    policy, optimizer = accelerator.prepare(policy, optimizer)
    meters = {
        "loss": AverageMeter("loss"),
        "grad_norm": AverageMeter("grdn"),
        "lr": AverageMeter("lr"),
        "update_s": AverageMeter("updt_s"),
        "dataloading_s": AverageMeter("data_s"),
    }
    tracker = MetricsTracker(1, dataset.num_frames, dataset.num_episodes, meters)
    tracker, logs = update_policy(
        tracker, policy, batch, optimizer, config.optimizer_grad_clip_norm, accelerator
    )
    loss = tracker.loss.val
    assert loss == loss and abs(loss) < 1e4, f"Stage I loss is not finite: {loss}"
    states = sorted({str(t.dtype) for s in optimizer.optimizer.state.values() for t in s.values() if t.ndim})
    stage(
        "stage1_step",
        canvas=list(batch["observation.aim.rgb"].shape[-2:]),
        latent_grid=list(grid),
        tokens_per_frame=tokens_per_frame,
        loss=loss,
        grad_norm=tracker.grad_norm.val,
        terms=logs,
        optimizer_state_dtypes=states,
    )
    del optimizer, accelerator
    gc.collect()

    # 2. One action chunk from the current observation, with the context cache.
    policy.eval()
    policy.reset()
    obs = observation(frames[0], preprocessor)
    action = policy.select_action(obs)
    assert torch.isfinite(action).all() and action.shape == (1, config.action_dim)
    stage(
        "action_chunk_cached",
        chunk=list(policy.last_prediction.actions.shape),
        denoising_steps=cfg.denoising_steps,
    )

    # 3. GRPO: two flow-SDE chunks, opposite advantages, one update of the action stream.
    trained = freeze_all_but_action_stream(policy)
    rgb_before = fingerprint(policy.model.rgb.state_dict())
    action_before = fingerprint(policy.model.action.state_dict())
    actor = StochasticActor(policy, sde_noise=0.5, decode_value_maps=False)
    chunks = []
    for _ in range(2):
        actor.reset()
        chunks.append(actor.predict_chunk(obs)[1])
    grpo_optimizer = torch.optim.AdamW(trained, lr=1e-4)
    stats = grpo_update(
        policy,
        trajectories=ActionTrajectory.cat(chunks),
        advantages=torch.tensor([1.0, -1.0]),
        optimizer=grpo_optimizer,
        params=trained,
        settings=UpdateSettings(),
    )
    assert all(v == v for v in stats.values()), stats
    assert fingerprint(policy.model.rgb.state_dict()) == rgb_before, "GRPO moved the frozen RGB stream"
    assert fingerprint(policy.model.action.state_dict()) != action_before, (
        "GRPO did not update the action stream"
    )
    stage("grpo_update", **{k: round(v, 6) for k, v in stats.items()})
    del grpo_optimizer, actor, chunks
    gc.collect()

    # 4. Save, free, reload from the folder (codec, text encoder and config from their paths).
    saved = workdir / "policy"
    policy.save_pretrained(saved)
    expected = fingerprint(policy.state_dict())
    del policy
    gc.collect()
    assert fingerprint(load_file(saved / "model.safetensors")) == expected
    reloaded = AIMPolicy.from_pretrained(saved, strict=True)
    assert fingerprint(reloaded.state_dict()) == expected, "the reloaded weights differ from the saved ones"
    stage("save_and_reload", checkpoint_gib=round((saved / "model.safetensors").stat().st_size / 2**30, 3))

    result = {
        "preset": cfg.preset,
        "num_layers": cfg.num_layers,
        "dtype": config.dtype,
        "gradient_checkpointing": config.gradient_checkpointing,
        "stages": stages,
    }
    table = "| stage | seconds | peak RSS (GiB) | facts |\n|---|---|---|---|\n" + "\n".join(
        f"| {name} | {s['seconds']} | {s['peak_rss_gib']} | "
        + ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("seconds", "peak_rss_gib"))
        + " |"
        for name, s in stages.items()
    )
    path = write(f"full_width_smoke_{cfg.preset}_L{cfg.num_layers}_{device_tag('cpu')}", result, table)
    print(table)
    print(f"written to {path}")
    return result


def main() -> None:
    run_command(full_width_smoke, "benchmarks.full_width_smoke")


if __name__ == "__main__":
    main()
