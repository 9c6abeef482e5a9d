"""The checkpoints a policy server serves: loaded at start-up, with their saved processors."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies import get_policy_class, make_pre_post_processors

from lerobot_aim.serving.configs import ServingConfigError


@dataclass
class ServedPolicy:
    """A checkpoint loaded at start-up, with its processors."""

    path: str
    policy_type: str
    device: str
    policy: Any
    preprocessor: Any
    postprocessor: Any
    aliases: frozenset[str] = frozenset()

    def make_processors(self, rename_map: dict[str, str] | None = None):
        device_override = {"device": self.device}
        pre_overrides: dict[str, Any] = {"device_processor": device_override}
        if rename_map:
            pre_overrides["rename_observations_processor"] = {"rename_map": rename_map}
        return make_pre_post_processors(
            self.policy.config,
            pretrained_path=self.path,
            preprocessor_overrides=pre_overrides,
            postprocessor_overrides={"device_processor": device_override},
        )


def _aliases(path: str) -> frozenset[str]:
    names = {path}
    local = Path(path).expanduser()
    if local.exists():
        names.add(os.path.realpath(local))
    return frozenset(names)


def _may_be_hub_id(path: str) -> bool:
    """Whether ``path`` could name a Hub repository ('name' or 'user/name') rather than a folder."""
    return (
        not Path(path).expanduser().is_absolute() and not path.startswith((".", "~")) and path.count("/") <= 1
    )


def _config_of(path: str) -> PreTrainedConfig:
    """The checkpoint's config, or :class:`ServingConfigError` saying why there is none."""
    local = Path(path).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        raise ServingConfigError(
            f"--policy.path={path} is a folder without config.json, not a LeRobot checkpoint: pass the "
            "`pretrained_model` folder a training run saved (e.g. outputs/train/<run>/checkpoints/last/pretrained_model)."
        )
    if local.exists() and not local.is_dir():
        raise ServingConfigError(
            f"--policy.path={path} is a file: pass the checkpoint's folder (`pretrained_model`)."
        )
    if not local.exists() and not _may_be_hub_id(path):
        raise ServingConfigError(
            f"No checkpoint at --policy.path={path}: there is no folder {local.absolute()} (and it is not a "
            "Hub id of the form user/name). Pass the `pretrained_model` folder a training run saved."
        )
    try:
        return PreTrainedConfig.from_pretrained(path)
    except Exception as e:
        if local.exists():
            raise
        raise ServingConfigError(
            f"Cannot load --policy.path={path}: there is no such local folder ({local.absolute()}), and as a "
            f"Hub id it failed: {type(e).__name__}: {e}"
        ) from None


def load_served_policy(path: str, device: str | None = None) -> ServedPolicy:
    """Load a checkpoint (policy and its saved processors) the way LeRobot's server does."""
    config = _config_of(path)
    device = device or getattr(config, "device", None) or "cpu"
    config.device = device
    policy = get_policy_class(config.type).from_pretrained(path, config=config)
    policy.to(device)
    policy.eval()
    served = ServedPolicy(path, config.type, device, policy, None, None, _aliases(path))
    served.preprocessor, served.postprocessor = served.make_processors()
    return served
