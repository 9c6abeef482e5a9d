"""``lerobot-aim-grpo``: Stage II GRPO post-training of the action stream in closed loop.

    lerobot-aim-grpo --policy.path=outputs/train/aim/checkpoints/last/pretrained_model \\
        --env.type=aim_metaworld --env.task=pick-place-v3 --output_dir=outputs/grpo/pick_place \\
        --iterations=200 --group_size=8 --num_initial_states=2

Each iteration takes the next task of the env config (a multi-task config, e.g. a MetaWorld
difficulty group, is trained on its tasks in turn), resets ``num_initial_states`` groups of
``group_size`` envs (the envs of a group get the same seed, hence the same initial state), rolls
them out with stochastic (flow-SDE) action chunks, scores each episode (sparse success + the frozen
value head's dense reward), normalises the returns within each group into advantages, and updates
only the action stream with the clipped GRPO objective. The RGB and value streams, the codec and
the text encoder stay frozen.

Checkpoints follow LeRobot's layout, ``<output_dir>/checkpoints/<iteration>/pretrained_model/`` (policy
config, ``model.safetensors``, processors, ``grpo_config.json``) and ``training_state/`` (optimizer,
RNG, iteration), with ``checkpoints/last`` pointing at the newest; ``pretrained_model`` loads with
``AIMPolicy.from_pretrained`` and ``lerobot-eval --policy.path=...``. Re-run the same command with
``--resume=true`` to continue from ``checkpoints/last``.
"""

import json
import logging
import time
from functools import partial
from pathlib import Path

import torch
from lerobot.common.train_utils import (
    get_step_checkpoint_dir,
    load_training_state,
    save_training_state,
    update_last_checkpoint,
)
from lerobot.configs import parser
from lerobot.envs import close_envs, make_env, make_env_pre_post_processors
from lerobot.policies import make_policy, make_pre_post_processors
from lerobot.utils.constants import CHECKPOINTS_DIR, LAST_CHECKPOINT_LINK, PRETRAINED_MODEL_DIR
from lerobot.utils.device_utils import get_safe_torch_device
from lerobot.utils.import_utils import register_third_party_plugins
from lerobot.utils.random_utils import set_seed
from lerobot.utils.utils import init_logging, inside_slurm
from tqdm import tqdm

from lerobot_aim.cli import run_command
from lerobot_aim.data.schema import IMAGES_PREFIX
from lerobot_aim.rl.configs import GRPOConfig
from lerobot_aim.rl.grpo import freeze_all_but_action_stream, grpo_update, reference_action_stream
from lerobot_aim.rl.rewards import group_advantages
from lerobot_aim.rl.rollout import RewardSpec, StochasticActor, rollout_with_restarts

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def group_seeds(seed: int, iteration: int, num_initial_states: int, group_size: int) -> list[int]:
    """Env seeds of one iteration: ``group_size`` equal seeds per initial state, a new state per group."""
    return [
        seed + iteration * num_initial_states + k
        for k in range(num_initial_states)
        for _ in range(group_size)
    ]


def _task_envs(envs: dict) -> list[tuple[str, object]]:
    """make_env's ``{suite: {task_id: vector env}}`` as a list of ("suite/task_id", vector env)."""
    items = [(f"{suite}/{task_id}", env) for suite, tasks in envs.items() for task_id, env in tasks.items()]
    if not items:
        raise ValueError("make_env returned no environment.")
    return items


def _camera_sources(policy_cameras: list[str], rename_map: dict[str, str]) -> dict[str, str]:
    """Policy camera -> env camera, inverting observation-key renames of camera images."""
    sources = {}
    for src, dst in rename_map.items():
        if src.startswith(IMAGES_PREFIX) and dst.startswith(IMAGES_PREFIX):
            sources[dst.removeprefix(IMAGES_PREFIX)] = src.removeprefix(IMAGES_PREFIX)
    return {cam: sources.get(cam, cam) for cam in policy_cameras}


def _load_weights(policy, checkpoint: Path) -> None:
    from safetensors.torch import load_model

    device = next(policy.parameters()).device
    missing, unexpected = load_model(
        policy, str(checkpoint / "model.safetensors"), strict=False, device=str(device)
    )
    if unexpected:
        raise ValueError(f"The checkpoint {checkpoint} has weights this policy does not: {unexpected[:5]}")
    if missing:
        raise ValueError(f"The checkpoint {checkpoint} lacks weights of this policy: {missing[:5]}")


def save_grpo_checkpoint(
    cfg: GRPOConfig, iteration: int, policy, preprocessor, postprocessor, optimizer
) -> Path:
    checkpoint_dir = get_step_checkpoint_dir(cfg.output_dir, cfg.iterations, iteration)
    pretrained_dir = checkpoint_dir / PRETRAINED_MODEL_DIR
    policy.save_pretrained(pretrained_dir)
    preprocessor.save_pretrained(pretrained_dir)
    postprocessor.save_pretrained(pretrained_dir)
    cfg.save(pretrained_dir)
    save_training_state(checkpoint_dir, iteration, optimizer)
    update_last_checkpoint(checkpoint_dir)
    return checkpoint_dir


def _evaluate(cfg, envs, policy, processors: dict) -> dict:
    """Deterministic (ODE) evaluation with lerobot-eval's own loop, averaged over the tasks' envs.
    ``processors``: the env and policy pre/post-processors, by eval_policy's argument names."""
    from lerobot.scripts.lerobot_eval import eval_policy

    infos = []
    with torch.no_grad():
        for env in envs:
            info = eval_policy(
                env=env, policy=policy, n_episodes=cfg.eval_episodes, start_seed=cfg.eval_seed, **processors
            )
            infos.append(info["aggregated"])
    mean = lambda key: sum(info[key] for info in infos) / len(infos)  # noqa: E731
    return {"eval_pc_success": mean("pc_success"), "eval_avg_sum_reward": mean("avg_sum_reward")}


def train(cfg: GRPOConfig) -> Path:
    """Run Stage II; returns the last checkpoint directory."""
    logger.info("GRPO config:\n%s", json.dumps(cfg.to_dict(), indent=2, default=str))
    get_safe_torch_device(cfg.policy.device, log=True)  # fails early on an unavailable device
    set_seed(cfg.seed)
    last_link = cfg.output_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT_LINK
    if cfg.resume and not last_link.exists():
        raise FileNotFoundError(f"--resume=true but {last_link} does not exist.")
    if not cfg.resume and (cfg.output_dir / CHECKPOINTS_DIR).exists():
        raise FileExistsError(
            f"{cfg.output_dir} already holds checkpoints: pass --resume=true to continue, or another --output_dir."
        )
    cfg.output_dir.mkdir(parents=True, exist_ok=True)

    def make_task_envs() -> list[tuple[str, object]]:
        tasks = _task_envs(make_env(cfg.env, n_envs=cfg.num_envs, use_async_envs=cfg.use_async_envs))
        logger.info("Tasks, taken in turn: %s (%d sub-envs each).", [name for name, _ in tasks], cfg.num_envs)
        return tasks

    def rebuild_task_env(index: int):
        """A fresh vector env of one task (after a crash); the other tasks' new envs are closed."""
        tasks = make_task_envs()
        for i, (_, env) in enumerate(tasks):
            if i != index:
                env.close()
        return tasks[index][1]

    policy = make_policy(cfg=cfg.policy, env_cfg=cfg.env, rename_map=cfg.rename_map)
    policy.eval()
    preprocessor, postprocessor = make_pre_post_processors(
        policy_cfg=cfg.policy,
        pretrained_path=cfg.policy.pretrained_path,
        preprocessor_overrides={
            "device_processor": {"device": str(policy.config.device)},
            "rename_observations_processor": {"rename_map": cfg.rename_map},
        },
    )
    env_preprocessor, env_postprocessor = make_env_pre_post_processors(env_cfg=cfg.env, policy_cfg=cfg.policy)
    processors = {
        "env_preprocessor": env_preprocessor,
        "env_postprocessor": env_postprocessor,
        "preprocessor": preprocessor,
        "postprocessor": postprocessor,
    }

    params = freeze_all_but_action_stream(policy)
    reference = reference_action_stream(policy) if (cfg.kl_weight > 0 or cfg.track_ref_kl) else None
    optimizer = torch.optim.AdamW(
        params, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    start = 0
    if cfg.resume:
        checkpoint_dir = last_link.resolve()
        _load_weights(policy, checkpoint_dir / PRETRAINED_MODEL_DIR)
        start, optimizer, _ = load_training_state(checkpoint_dir, optimizer, None)
        logger.info("Resumed from %s (iteration %d).", checkpoint_dir, start)
        metrics = cfg.output_dir / METRICS_FILE
        if metrics.is_file():  # drop iterations after the checkpoint: they are run again
            lines = [
                line for line in metrics.read_text().splitlines() if json.loads(line)["iteration"] <= start
            ]
            metrics.write_text("".join(line + "\n" for line in lines))

    if policy.model.value is None:
        logger.warning("The policy has no value stream (attention_mode=no_value): sparse reward only.")
    reward = RewardSpec(
        lambda_d=cfg.lambda_d,
        lambda_s=cfg.lambda_s,
        views=cfg.dense_views,
        dense_aggregation=cfg.dense_aggregation,
        camera_sources=_camera_sources(list(policy.config.cameras), cfg.rename_map),
    )
    actor = StochasticActor(policy, cfg.sde_noise, decode_value_maps=cfg.lambda_d != 0)
    wandb_logger = None
    if cfg.wandb.enable and cfg.wandb.project:
        from lerobot.common.wandb_utils import WandBLogger

        wandb_logger = WandBLogger(cfg)

    checkpoint_dir = last_link.resolve() if cfg.resume else None
    holders = [{"name": name, "env": env, "restarts": 0} for name, env in make_task_envs()]
    progress = tqdm(
        range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="GRPO", disable=inside_slurm()
    )
    try:
        for iteration in progress:
            t0 = time.perf_counter()
            seeds = group_seeds(cfg.seed, iteration, cfg.num_initial_states, cfg.group_size)
            task = iteration % len(holders)
            result = rollout_with_restarts(
                partial(rebuild_task_env, task),
                holders[task],
                cfg.max_env_restarts,
                actor=actor,
                reward=reward,
                seeds=seeds,
                **processors,
            )
            t_rollout = time.perf_counter() - t0
            advantages = group_advantages(result.returns, cfg.group_size, cfg.advantage_eps)
            advantages = advantages.clamp(-cfg.advantage_clip, cfg.advantage_clip)
            chunk_adv = advantages[result.chunk_env]
            keep = result.chunk_valid.nonzero().squeeze(-1)
            stats = grpo_update(
                policy,
                result.trajectories.select(keep),
                chunk_adv[keep],
                optimizer,
                params,
                cfg.update_settings,
                reference=reference,
            )
            step = iteration + 1
            valid = result.valid
            logs = {
                "iteration": step,
                "task": holders[task]["name"],
                "success_rate": result.episode_success.float().mean().item(),
                "dense_reward": (result.dense[valid].mean().item() if valid.any() else 0.0),
                "return": result.returns.mean().item(),
                "return_std": result.returns.std(unbiased=False).item(),
                "env_return": (result.env_reward * valid).sum(-1).mean().item(),
                "episode_length": result.episode_length.float().mean().item(),
                "kl_old": stats.get("approx_kl", 0.0),
                "kl_ref": stats.get("kl_ref", 0.0),
                "clip_frac": stats.get("clip_frac", 0.0),
                "loss": stats.get("loss", 0.0),
                "policy_loss": stats.get("policy_loss", 0.0),
                "grad_norm": stats.get("grad_norm", 0.0),
                "ratio_mean": stats.get("ratio_mean", 1.0),
                "chunks": int(keep.numel()),
                "env_restarts": sum(holder["restarts"] for holder in holders),
                "rollout_s": t_rollout,
                "update_s": time.perf_counter() - t0 - t_rollout,
            }
            if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.iterations):
                logs |= _evaluate(cfg, [holder["env"] for holder in holders], policy, processors)
                policy.eval()
            logger.info(
                "iter %d/%d: %s",
                step,
                cfg.iterations,
                ", ".join(f"{k} {logs[k]:.3g}" for k in ("success_rate", "dense_reward", "return", "kl_old", "kl_ref", "clip_frac")),
            )
            progress.set_postfix(
                success=f"{logs['success_rate']:.2f}", ret=f"{logs['return']:.3f}", clip=f"{logs['clip_frac']:.2f}"
            )
            with open(cfg.output_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(logs) + "\n")
            if wandb_logger is not None:
                wandb_logger.log_dict({k: v for k, v in logs.items() if k != "iteration"}, step, mode="train")
            if (cfg.save_every > 0 and step % cfg.save_every == 0) or step == cfg.iterations:
                checkpoint_dir = save_grpo_checkpoint(
                    cfg, step, policy, preprocessor, postprocessor, optimizer
                )
                logger.info("Saved %s", checkpoint_dir)
                if wandb_logger is not None:
                    wandb_logger.log_policy(checkpoint_dir)
    finally:
        close_envs({"grpo": {i: holder["env"] for i, holder in enumerate(holders)}})
    return checkpoint_dir


@parser.wrap()
def train_grpo(cfg: GRPOConfig) -> Path:
    return train(cfg)


def main() -> None:
    init_logging()
    register_third_party_plugins()
    run_command(train_grpo, "lerobot-aim-grpo")


if __name__ == "__main__":
    main()
