"""The benchmark scripts' own logic: result bookkeeping, resuming, the baselines' dataset, FLOP counts.

The benchmarks themselves (timings, success rates) run as scripts under ``benchmarks/``, never here.
"""

import json

import numpy as np
import torch

from benchmarks.chunk_flops import chunk_flops
from benchmarks.chunk_latency import inputs, schedule_of
from benchmarks.param_count import latent_channels
from benchmarks.success import (
    baseline_dataset_edit,
    by_difficulty,
    start_training,
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
    z2 = 1.96**2  # 0 of n: the upper bound is z^2 / (n + z^2) in closed form (16.1% for n = 20)
    assert abs(wilson_interval(0.0, 20)[1] - 100 * z2 / (20 + z2)) < 1e-9


def test_success_intervals_contain_the_measured_rate():
    # The Wilson interval always contains the observed rate; at 0 and n successes it touches it. The
    # plot draws error bars as value - low and high - value, which must never be negative.
    for n in (1, 3, 7, 20, 30, 49, 50):
        for k in range(n + 1):
            rate = 100.0 * k / n
            low, high = wilson_interval(rate, n)
            assert 0.0 <= low <= rate <= high <= 100.0, (k, n, low, high)


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
    assert train_dir.exists()  # deciding deletes nothing (--partial=true reads a running benchmark)
    start_training(train_dir, fresh)
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
    uncached = [
        chunk_flops(model, context, noise, schedule_of(tiny_config, s), use_cache=False) for s in (1, 2)
    ]
    # Without the cache each step runs the context again; with it, each step runs the future only.
    assert uncached[1] == 2 * uncached[0]
    assert cached[1] - cached[0] < uncached[1] - uncached[0]


def test_action_steps_after_the_video_is_final_run_the_action_tokens_only(tiny_config):
    meta = torch.device("meta")
    with meta:
        model = AIMTransformer(tiny_config, 4, latent_channels(tiny_config)).eval()
    context, noise = inputs(tiny_config, 4, 1, 3, meta, torch.float32)

    def flops(video, action):
        return chunk_flops(model, context, noise, schedule_of(tiny_config, action, video), True)

    joint_step = flops(3, 3) - flops(2, 2)  # one more step of x, m and a
    action_step = flops(1, 4) - flops(1, 3)  # one more step of a alone, reading the cached final video
    assert flops(1, 5) - flops(1, 4) == action_step
    assert 0 < action_step < joint_step / 5


def test_success_counts_and_the_better_state_variant():
    from benchmarks.success import best_of, counts_by_task, dataset_value_map_schema

    groups = {"hard": ["assembly-v3", "pick-place-v3"]}
    info = {"per_task": [{"task_group": "hard", "task_id": 1, "metrics": {"successes": [True, False, True]}}]}
    assert counts_by_task(info, groups) == {"pick-place-v3": (2, 3)}
    rows = {"a": {"success": 50.0}, "b": {"success": 50.0}}
    assert best_of(rows, ("a", "b")) == "a"  # a tie keeps the paper-faithful first one
    rows["b"]["success"] = 55.0
    assert best_of(rows, ("a", "b"), ["a", "b"]) == "b" and best_of(rows, ("a", "c"), ["a", "c"]) is None
    assert best_of(rows, ("a", "c"), ["a"]) == "a"  # Stage II from the only one of the pair trained
    assert best_of(rows, ("a", "b"), ["act"]) is None
    features = {"observation.images.head": {}, "observation.images.wrist": {},
                "observation.value_maps.head": {"info": {"aim.value_map_schema": 2, "aim.head_camera": "head"}},
                "observation.value_maps.wrist": {"info": {"aim.value_map_schema": 1}}}  # fmt: skip
    assert dataset_value_map_schema({"features": features}) == {"head": 2, "wrist": 1}


def test_learning_curves_count_steps_over_resumed_runs():
    from benchmarks.success import learning_curve

    line = (
        "INFO x.py:641 step:{} smpl:{} ep:1 epch:0.10 loss:{} grdn:1.0 lr:1.0e-03 updt_s:0.500 data_s:0.020"
    )
    first = ["Start offline training on a fixed dataset, with effective batch size: 16",
             line.format(50, 800, 0.9), line.format(100, "2K", 0.8), "Checkpoint policy after step 100",
             line.format(150, "2K", 0.7)]  # fmt: skip
    resumed = ["Start offline training on a fixed dataset, with effective batch size: 16",
               line.format(150, "2K", 0.6), line.format(200, "3K", 0.5)]  # fmt: skip
    curve = learning_curve("\n".join(first + resumed), log_freq=50, batch_size=16)
    assert [p["step"] for p in curve] == [50, 100, 150, 200]
    assert [p["loss"] for p in curve] == [0.9, 0.8, 0.6, 0.5]  # the resumed run replaces step 150
    assert curve[-1]["samples"] == 3200 and curve[0]["update_s"] == 0.5


def test_value_map_metrics_against_hand_computed_truth():
    import numpy as np

    from benchmarks.value_maps import compare_maps, future_steps, pearson, plan_steps, summarise

    recorded = np.zeros((8, 8))
    recorded[2, 5] = 1.0  # peak at u=5, v=2
    predicted = np.zeros((8, 8))
    predicted[6, 2] = 0.7  # peak at u=2, v=6: 5 px away (3-4-5)
    m = compare_maps(predicted, recorded)
    assert m["peak_px"] == 5.0 and m["corr"] < 0
    assert compare_maps(recorded, recorded) == {"peak_px": 0.0, "corr": 1.0}
    assert compare_maps(predicted, recorded * 0.4) is None  # the recorded view shows no region
    assert np.isnan(pearson(np.ones((4, 4)), recorded[:4, :4]))
    s = summarise([{"peak_px": 5.0, "corr": 0.5}, {"peak_px": 1.0, "corr": float("nan")}])
    assert s == {"n": 2, "peak_px": 3.0, "within_3px": 0.5, "corr": 0.5}
    assert plan_steps(13, 4, [6, 2]) == [0, 2, 4, 8, 12]  # event 6 -> a plan at 2; event 2 has none
    assert future_steps(4, 4, 2, 13) == [(0, 8), (1, 12)] and future_steps(8, 4, 2, 13) == [(0, 12)]


def test_end_effector_hit_reads_the_map_where_the_camera_sees_it():
    import numpy as np

    from benchmarks.value_maps import hit
    from lerobot_aim.asvm.camera import CameraCalibration

    # A camera at the origin looking along +z (OpenCV), f = 10 px, 8 x 8 image: the point (0.1, -0.2, 1)
    # lands on u = 4 + 10 * 0.1 = 5, v = 4 - 2 = 2 (independent of the project's projection code).
    calib = CameraCalibration(np.array([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]), np.eye(3, 4), 8, 8)
    canvas = np.zeros((12, 8))  # T-pose canvas of an 8 x 8 head view and two 4 x 4 wrists
    canvas[2, 5] = 1.0
    point = np.array([0.1, -0.2, 1.0])
    assert hit(canvas, point, [calib, calib, calib], (8, 8), "head") is True
    assert hit(canvas, point + [0.2, 0, 0], [calib, calib, calib], (8, 8), "head") is False
    assert hit(canvas, np.array([0.0, 0.0, -1.0]), [calib], (8, 8), "head") is None  # behind the camera
    wrist = np.zeros((12, 8))
    wrist[8 + 1, 4 + 2] = (
        1.0  # right wrist quarter: (5, 2) at half size -> (2.25, 0.75) -> canvas (6.25, 8.75)
    )
    wrist[8 + 1, 4 + 3] = 1.0
    assert hit(wrist, point, [calib, calib, calib], (8, 8), "head") is False
    assert hit(wrist, point, [calib, calib, calib], (8, 8), "max") is True


def test_a_kept_value_map_run_reads_back_as_it_was_run(tmp_path):
    from benchmarks.value_maps import load_run, save_run

    rng = np.random.default_rng(0)
    run = {"config": {"attention_mode": "wam", "frame_stride": 4}, "episodes": [{
        "plans": {0: {"maps": list(rng.random((2, 8, 6))), "action_mse": {"imagined": 0.5}}, 4: {"maps": None, "action_mse": {"imagined": 0.25}}},
        "recorded": list(rng.random((9, 8, 6))),
        "rgb": list(rng.integers(0, 256, (9, 3, 8, 6)) / 255),
    }]}  # fmt: skip
    save_run(tmp_path / "wam.npz", run)
    back = load_run(tmp_path / "wam.npz")
    assert back["config"] == run["config"] and set(back["episodes"][0]["plans"]) == {0, 4}
    np.testing.assert_array_equal(
        np.stack(back["episodes"][0]["plans"][0]["maps"]),
        np.stack(run["episodes"][0]["plans"][0]["maps"]).astype(np.float32),
    )
    assert back["episodes"][0]["plans"][4] == {"action_mse": {"imagined": 0.25}, "maps": None}
    np.testing.assert_allclose(
        np.stack(back["episodes"][0]["rgb"]), np.stack(run["episodes"][0]["rgb"]), atol=1e-6
    )
    assert not list(tmp_path.glob("*.partial*"))


def test_inference_tradeoff_gives_intervals_and_a_paired_difference(tmp_path):
    """offline_errors on a tiny checkpoint and a recorded dataset: per-frame errors give a mean inside
    its interval, and the joint schedule's paired difference to itself is exactly 0."""
    from types import SimpleNamespace

    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.factory import make_pre_post_processors

    from benchmarks.chunk_latency import ScheduleGrid
    from benchmarks.inference_tradeoff import offline_errors
    from lerobot_aim.data.synthetic import make_synthetic_dataset
    from lerobot_aim.modeling_aim import AIMPolicy
    from tests.conftest import save_tiny_checkpoint

    make_synthetic_dataset(tmp_path / "data", num_episodes=2, episode_length=20)
    path = save_tiny_checkpoint(tmp_path / "ckpt", ["head"], image_hw=(32, 32), action_dim=2, state_dim=2)
    policy = AIMPolicy.from_pretrained(path).eval()
    preprocessor, _ = make_pre_post_processors(policy.config, pretrained_path=str(path))
    meta = LeRobotDatasetMetadata("local/aim_synthetic", root=tmp_path / "data")
    dataset = LeRobotDataset(
        "local/aim_synthetic",
        root=tmp_path / "data",
        delta_timestamps=resolve_delta_timestamps(policy.config, meta),
    )
    schedules = ScheduleGrid(video_steps=[1, 10], action_steps=[10]).of(policy.config)
    rows = offline_errors(
        policy, preprocessor, dataset, schedules, SimpleNamespace(samples=6, batch_size=4, seed=0)
    )
    assert [(r["video_steps"], r["frames"]) for r in rows] == [(1, 6), (10, 6)]
    for row in rows:
        for kind in ("chunk", "executed"):
            low, high = row[f"{kind}_mse_interval"]
            assert low <= row[f"{kind}_mse"] <= high and row[f"{kind}_mse"] >= 0
    joint = rows[1]
    assert joint["executed_diff"] == 0 and joint["executed_diff_interval"] == (0.0, 0.0)
    assert rows[0]["executed_mse"] != joint["executed_mse"]  # one video step is another computation


def test_action_errors_average_episodes_and_pair_the_given_maps():
    from benchmarks.value_maps import action_errors

    def plan(imagined, recorded, blank):
        return {"maps": None, "action_mse": {"imagined": imagined, "recorded": recorded, "blank": blank}}

    # episode means: imagined 2 / 4, recorded 1 / 4, blank 2 / 6
    plans = [{0: plan(1.0, 0.5, 1.0), 4: plan(3.0, 1.5, 3.0)}, {0: plan(4.0, 4.0, 6.0)}]
    errors = action_errors(plans)
    assert errors["imagined"]["mse"] == 3.0 and errors["recorded"]["mse"] == 2.5
    assert errors["recorded"]["diff_vs_imagined"]["mean"] == -0.5  # (-1 + 0) / 2
    half = 1.96 * np.std([-1.0, 0.0], ddof=1) / np.sqrt(2)
    np.testing.assert_allclose(errors["recorded"]["diff_vs_imagined"]["interval"], [-0.5 - half, -0.5 + half])
    assert errors["recorded"]["diff_vs_blank"]["mean"] == -1.5  # (-1 - 2) / 2
    assert errors["blank"]["diff_vs_imagined"]["mean"] == 1.0 and "diff_vs_blank" not in errors["blank"]
    assert (
        not {"diff_vs_imagined", "diff_vs_blank"} & set(errors["imagined"])
        and errors["imagined"]["episodes"] == 2
    )


def test_the_oracle_maps_are_the_training_targets_and_reach_the_actions(tmp_path):
    """benchmarks.value_maps gives the action stream the recorded future maps, encoded from single
    steps of the dataset: they are exactly the value latents a training sample of LeRobotDataset (its
    delta timestamps, AIM's preprocessor, ``encode_sample``) asks the model to predict. Along an episode
    every plan scores the imagined, recorded and blank maps, and the two given maps give other actions."""
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.factory import make_pre_post_processors

    from benchmarks.value_maps import given_value_latents, run_policy
    from lerobot_aim.data.synthetic import make_synthetic_dataset
    from lerobot_aim.modeling_aim import AIMPolicy
    from lerobot_aim.processor_aim import OBS_RGB_CANVAS, OBS_VALUE_CANVAS
    from tests.conftest import save_tiny_checkpoint

    make_synthetic_dataset(tmp_path / "data", num_episodes=1, episode_length=20)
    path = save_tiny_checkpoint(tmp_path / "ckpt", ["head"], image_hw=(32, 32), action_dim=2, state_dim=2)
    policy = AIMPolicy.from_pretrained(path).eval()
    cfg = policy.config
    preprocessor, _ = make_pre_post_processors(cfg, pretrained_path=str(path))
    root, repo = tmp_path / "data", "local/aim_synthetic"
    windows = LeRobotDataset(
        repo,
        root=root,
        delta_timestamps=resolve_delta_timestamps(cfg, LeRobotDatasetMetadata(repo, root=root)),
    )
    steps = LeRobotDataset(repo, root=root)
    keys = ["observation.images.head", "observation.value_maps.head", "observation.state"]

    def single(index):
        item = steps[index]
        return {**{k: item[k][None] for k in keys}, "task": [item["task"]], "action": item["action"][None]}

    t, stride = 4, cfg.frame_stride  # the synthetic maps move at step 8
    sample = windows[t]
    target = policy.encode_sample(
        preprocessor(
            {**{k: v[None] for k, v in sample.items() if torch.is_tensor(v)}, "task": [sample["task"]]}
        )
    ).future.value
    packed = {
        s: preprocessor(single(s))
        for s in range(t - stride * cfg.history_frames, t + stride * cfg.future_frames + 1, stride)
    }
    frames = torch.stack([packed[s][OBS_RGB_CANVAS][0] for s in sorted(packed) if s <= t])[None]
    future = torch.stack([packed[s][OBS_VALUE_CANVAS][0] for s in sorted(packed) if s > t])[None]
    torch.testing.assert_close(given_value_latents(policy, frames, future), target, rtol=1e-5, atol=1e-5)
    stale = torch.stack([packed[s][OBS_VALUE_CANVAS][0] for s in (t, t + stride)])[None]  # one stride early
    assert not torch.allclose(given_value_latents(policy, frames, stale), target, atol=1e-3)

    episode = {"steps": [{"obs": (o := single(s)) and {k: v for k, v in o.items() if k != "action"}, "action": o["action"]} for s in range(20)], "events": []}  # fmt: skip
    run = run_policy(path, [episode], seed=0)
    plans = run["episodes"][0]["plans"]
    assert sorted(plans) == [0, 4, 8, 12, 16]
    for plan in plans.values():
        assert set(plan["action_mse"]) == {"imagined", "recorded", "blank"}
        assert all(np.isfinite(v) and v >= 0 for v in plan["action_mse"].values())
        assert plan["action_mse"]["recorded"] != plan["action_mse"]["blank"]
