"""The config of ``lerobot-aim-grpo`` (Stage II), as LeRobot keeps ``configs/train.py`` beside
``scripts/lerobot_train.py``."""

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import draccus
from lerobot.configs import parser
from lerobot.configs.default import WandBConfig
from lerobot.configs.policies import PreTrainedConfig
from lerobot.envs.configs import EnvConfig

from lerobot_aim.checkpoint import check_local_checkpoint
from lerobot_aim.cli import InputError
from lerobot_aim.rl.grpo import RATIO_LEVELS, UpdateSettings
from lerobot_aim.rl.rewards import DENSE_AGGREGATIONS, VIEW_MODES

GRPO_CONFIG_NAME = "grpo_config.json"


class GRPOConfigError(InputError):
    """A setting of lerobot-aim-grpo that cannot work, with what to set instead."""


@dataclass
class GRPOConfig:
    """Stage II (GRPO) post-training of AIM's action stream."""

    env: EnvConfig
    # Loaded from --policy.path=<Stage I checkpoint> (with --policy.<field>=... overrides).
    policy: PreTrainedConfig | None = None
    output_dir: Path | None = None
    job_name: str | None = None
    # Continue from <output_dir>/checkpoints/last (same command, plus --resume=true).
    resume: bool = False
    seed: int = 1000
    # GRPO iterations (rollout + update); checkpoints are numbered by iteration.
    iterations: int = 100
    # G: rollouts per initial state (envs reset with the same seed).
    group_size: int = 8
    # Initial states (groups) per iteration: group_size * num_initial_states envs run in parallel.
    num_initial_states: int = 2
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    # eps of clip(rho, 1 - eps, 1 + eps).
    clip_epsilon: float = 0.2
    # "step": one ratio per denoising step (Flow-GRPO); "chunk": one per chunk (product over steps).
    ratio_level: str = "step"
    # Reward weights: r_t = lambda_d * dense_t + lambda_s * success_t.
    lambda_d: float = 0.5
    lambda_s: float = 1.0
    # Dense reward from the value maps of all views ("max") or of the head view only ("head").
    dense_views: str = "max"
    # Dense term of the return: "mean" over the episode's steps (default) or "sum".
    dense_aggregation: str = "mean"
    # Advantages: (R - mean) / (std + eps) per group, then clipped to [-advantage_clip, advantage_clip].
    advantage_eps: float = 1e-4
    advantage_clip: float = 5.0
    # Weight of KL(pi || pi_StageI) in the loss (0: off).
    kl_weight: float = 0.0
    # Log KL(pi || pi_StageI) even when kl_weight=0 (costs one no-grad pass per minibatch; the Stage I
    # action stream is kept anyway: its frozen copy embeds the context).
    track_ref_kl: bool = True
    # Noise level a of the flow-SDE (sigma_t = a sqrt(t / (1 - t))); 0 is the deterministic ODE.
    sde_noise: float = 0.5
    max_grad_norm: float = 1.0
    # Passes over each iteration's chunks, and chunks per optimizer step (0: all in one step). Logged
    # kl_old / clip_frac are measured on each minibatch before its step (so 0 with a single step);
    # each minibatch runs the whole network with gradients K times: keep it small for the 5B model.
    num_epochs: int = 1
    minibatch_size: int = 16
    # Evaluate (deterministic sampling, lerobot-eval's loop) every N iterations (0: never).
    eval_every: int = 0
    eval_episodes: int = 10
    eval_seed: int = 100_000
    # Save a checkpoint every N iterations (and after the last one).
    save_every: int = 10
    # Env workers in subprocesses (gymnasium AsyncVectorEnv) or in this process.
    use_async_envs: bool = False
    # A failing env is closed, rebuilt and the rollout re-run, this many times per iteration.
    max_env_restarts: int = 3
    # Observation key renames, as lerobot-eval's --rename_map.
    rename_map: dict[str, str] = field(default_factory=dict)
    wandb: WandBConfig = field(default_factory=WandBConfig)

    def __post_init__(self) -> None:
        policy_path = parser.get_path_arg("policy")
        if policy_path:
            check_local_checkpoint(policy_path)
            cli_overrides = parser.get_cli_overrides("policy") or []
            self.policy = PreTrainedConfig.from_pretrained(policy_path, cli_overrides=cli_overrides)
            self.policy.pretrained_path = Path(policy_path)
        if self.policy is None or not self.policy.pretrained_path:
            raise GRPOConfigError(
                "Stage II starts from a trained policy: pass --policy.path=<Stage I checkpoint>/pretrained_model."
            )
        if self.policy.type != "aim":
            raise GRPOConfigError(f"lerobot-aim-grpo trains AIM policies, got --policy.type={self.policy.type}.")
        for name, allowed in (
            ("ratio_level", RATIO_LEVELS),
            ("dense_views", VIEW_MODES),
            ("dense_aggregation", DENSE_AGGREGATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise GRPOConfigError(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.group_size < 2:
            raise GRPOConfigError(
                f"--group_size must be >= 2 (advantages are relative within a group), got {self.group_size}."
            )
        if self.num_initial_states < 1 or self.iterations < 1:
            raise GRPOConfigError("--num_initial_states and --iterations must be >= 1.")
        if self.sde_noise < 0:
            raise GRPOConfigError(f"--sde_noise must be >= 0, got {self.sde_noise}.")
        self.adam_betas = tuple(self.adam_betas)
        if not self.job_name:
            self.job_name = f"grpo_{self.env.type}_{self.policy.type}"
        if not self.output_dir:
            now = dt.datetime.now()
            self.output_dir = Path("outputs/grpo") / f"{now:%Y-%m-%d}/{now:%H-%M-%S}_{self.job_name}"
        self.output_dir = Path(self.output_dir)

    @classmethod
    def __get_path_fields__(cls) -> list[str]:
        return ["policy"]

    # What LeRobot's WandBLogger reads from a train config.
    @property
    def dataset(self) -> None:
        return None

    @property
    def is_reward_model_training(self) -> bool:
        return False

    def to_dict(self) -> dict:
        return draccus.encode(self)

    def save(self, directory: Path) -> None:
        with open(Path(directory) / GRPO_CONFIG_NAME, "w") as f, draccus.config_type("json"):
            draccus.dump(self, f, indent=4)

    @property
    def update_settings(self) -> UpdateSettings:
        """What grpo_update needs of this config."""
        return UpdateSettings(
            clip_epsilon=self.clip_epsilon,
            ratio_level=self.ratio_level,
            kl_weight=self.kl_weight,
            num_epochs=self.num_epochs,
            minibatch_size=self.minibatch_size,
            max_grad_norm=self.max_grad_norm,
        )

    @property
    def num_envs(self) -> int:
        return self.group_size * self.num_initial_states
