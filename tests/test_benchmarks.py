"""The benchmark scripts' own logic: result bookkeeping, resuming, the baselines' dataset, FLOP counts.

The benchmarks themselves (timings, success rates) run as scripts under ``benchmarks/``, never here.
"""

import json

import torch

from benchmarks.chunk_flops import chunk_flops
from benchmarks.chunk_latency import inputs, schedule_of
from benchmarks.param_count import latent_channels
from benchmarks.success import (
    baseline_dataset_edit,
    by_difficulty,
    success_by_task,
    train_command,
    wilson_interval,
)
from lerobot_aim.model import AIMTransformer


def test_success_is_reported_per_task_and_per_difficulty_group():
    groups = {"button-press-v3": ["button-press-v3"], "hard": ["assembly-v3", "pick-place-v3"]}
    info = {"per_task": [
        {"task_group": "hard", "task_id": 1, "metrics": {"successes": [True, False, False, False]}},
        {"task_group": "button-press-v3", "task_id": 0, "metrics": {"successes": [True, True]}},
        {"task_group": "hard", "task_id": 0, "metrics": {"successes": [False, False, False, False]}},
    ]}  # fmt: skip
    per_task = success_by_task(info, groups)
    assert per_task == {"pick-place-v3": 25.0, "button-press-v3": 100.0, "assembly-v3": 0.0}
    assert by_difficulty(per_task) == {"hard": 12.5, "easy": 100.0}


def test_success_intervals_are_wilson_score_intervals():
    low, high = wilson_interval(50.0, 30)
    assert 33.1 < low < 33.2 and 66.8 < high < 66.9  # 15 of 30 episodes: 33.2-66.8%
    assert wilson_interval(0.0, 30)[0] == 0.0 and wilson_interval(100.0, 30)[1] == 100.0
    assert wilson_interval(0.0, 30)[1] > 10.0  # no success in 30 episodes still allows 11%


def _checkpoint(train_dir, step, total_steps):
    folder = train_dir / "checkpoints" / f"{step:06d}" / "pretrained_model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "train_config.json").write_text(json.dumps({"steps": total_steps}))
    last = train_dir / "checkpoints" / "last"
    last.unlink(missing_ok=True)
    last.symlink_to(folder.parent.name)


def test_training_is_started_resumed_or_skipped(tmp_path):
    train_dir = tmp_path / "train" / "act"
    (train_dir / "logs").mkdir(parents=True)  # a run that died before its first checkpoint
    fresh = train_command(train_dir, ["--policy.type=act", "--steps=600"])
    assert fresh[1:] == ["--policy.type=act", "--steps=600", f"--output_dir={train_dir}"]
    assert not train_dir.exists()  # lerobot-train refuses an existing output_dir without --resume

    _checkpoint(train_dir, 150, 600)
    resume = train_command(train_dir, ["--policy.type=act"])
    assert resume[1:] == [
        f"--config_path={train_dir / 'checkpoints' / '000150' / 'pretrained_model' / 'train_config.json'}",
        "--resume=true",
    ]
    _checkpoint(train_dir, 600, 600)
    assert train_command(train_dir, ["--policy.type=act"]) is None


def test_baselines_train_without_what_only_aim_reads(tmp_path):
    features = ["observation.images.head", "observation.images.wrist_left", "observation.value_maps.head",
                "observation.camera.head.intrinsics", "observation.state", "action", "observation.gripper_closed",
                "timestamp", "frame_index", "episode_index", "index", "task_index"]  # fmt: skip
    cmd = baseline_dataset_edit({"features": dict.fromkeys(features)}, tmp_path / "a", tmp_path / "b")
    assert "--operation.type=remove_feature" in cmd
    dropped = json.loads(next(c for c in cmd if c.startswith("--operation.feature_names=")).split("=", 1)[1])
    assert dropped == ["observation.value_maps.head", "observation.camera.head.intrinsics",
                       "observation.gripper_closed"]  # fmt: skip


def test_the_context_cache_removes_work_from_every_denoising_step(tiny_config):
    meta = torch.device("meta")
    with meta:
        model = AIMTransformer(tiny_config, 4, latent_channels(tiny_config)).eval()
    context, noise = inputs(tiny_config, 4, 1, 3, meta, torch.float32)
    cached = [chunk_flops(model, context, noise, schedule_of(tiny_config, s), use_cache=True) for s in (1, 2)]
    uncached = [chunk_flops(model, context, noise, schedule_of(tiny_config, s), use_cache=False) for s in (1, 2)]
    # Without the cache each step runs the context again; with it, each step runs the future only.
    assert uncached[1] == 2 * uncached[0]
    assert cached[1] - cached[0] < uncached[1] - uncached[0]


def test_action_steps_after_the_video_is_final_run_the_action_tokens_only(tiny_config):
    meta = torch.device("meta")
    with meta:
        model = AIMTransformer(tiny_config, 4, latent_channels(tiny_config)).eval()
    context, noise = inputs(tiny_config, 4, 1, 3, meta, torch.float32)
    flops = lambda video, action: chunk_flops(model, context, noise, schedule_of(tiny_config, action, video), True)  # noqa: E731
    joint_step = flops(3, 3) - flops(2, 2)  # one more step of x, m and a
    action_step = flops(1, 4) - flops(1, 3)  # one more step of a alone, reading the cached final video
    assert flops(1, 5) - flops(1, 4) == action_step
    assert 0 < action_step < joint_step / 5
