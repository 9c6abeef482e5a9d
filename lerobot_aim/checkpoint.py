"""What a saved AIM checkpoint must hold, and the errors that say what is wrong with one.

LeRobot reads any path that is not a local folder as a Hub id, so a mistyped local path surfaces as
"Repo id must be in the form 'repo_name'"; a damaged ``model.safetensors`` as a header error without
the file's name; a half-written checkpoint as a processor "migration" error. :func:`check_local_checkpoint`
and :func:`check_weights` turn those into one line that names the file and the fix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from lerobot_aim.cli import InputError
from lerobot_aim.configuration_aim import PRESETS_DIR

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")
RUN_LAYOUT = "outputs/train/<run>/checkpoints/last/pretrained_model"


class CheckpointError(InputError, ValueError):
    """A checkpoint that cannot be loaded (missing, partial, damaged, not finite, of another model), with
    what to pass instead."""


def may_be_hub_id(path: str | os.PathLike) -> bool:
    """Whether ``path`` could name a Hub repository ('name' or 'user/name') rather than a folder."""
    text = str(path)
    return not Path(text).expanduser().is_absolute() and not text.startswith((".", "~")) and text.count("/") <= 1


def check_local_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a Hub id or a folder with a whole checkpoint.

    Missing processors only warn: a policy saved alone (``save_pretrained``) loads, but LeRobot's CLIs
    need them (and then report a "migration" they would not need)."""
    local = Path(path).expanduser()
    if not local.exists():
        if may_be_hub_id(path):
            return
        raise CheckpointError(
            f"No checkpoint at {path}: there is no folder {local.absolute()}, and it is not a Hub id of the "
            f"form user/name. Pass the `pretrained_model` folder a training run saved ({RUN_LAYOUT})."
        )
    if not local.is_dir():
        raise CheckpointError(f"{path} is a file: pass the checkpoint's folder (`pretrained_model`).")
    if local.resolve() == PRESETS_DIR.resolve():
        raise CheckpointError(
            f"{path} is the folder of AIM's presets, not a checkpoint (with --resume=true, LeRobot reads the "
            "folder of --config_path as the checkpoint). To resume a run, pass "
            f"--config_path=outputs/train/<run>/checkpoints/last/pretrained_model/train_config.json."
        )
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (local / name).is_file()]
    if missing:
        raise CheckpointError(
            f"The checkpoint folder {local} has no {' and no '.join(missing)}: it is not a whole checkpoint "
            "(a save that was interrupted, or another folder). Pass a `pretrained_model` folder of a finished "
            f"save ({RUN_LAYOUT}, or an earlier checkpoints/<step>)."
        )
    absent = [name for name in PROCESSOR_FILES if not (local / name).is_file()]
    if absent:
        logger.warning(
            "The checkpoint %s has no %s: the policy loads, but lerobot-eval and the policy server also need "
            "its processors (save them with preprocessor.save_pretrained / postprocessor.save_pretrained).",
            local,
            " or ".join(absent),
        )


def check_weights(module: torch.nn.Module, source: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensors of ``module``'s state that are not finite."""
    bad = [name for name, value in module.state_dict().items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise CheckpointError(
            f"The weights loaded from {source} are not finite ({len(bad)} tensors with NaN or inf, e.g. "
            f"{', '.join(bad[:3])}): the checkpoint is damaged or its training diverged. Use an earlier "
            "checkpoint; a policy with such weights would hand a robot non-finite actions."
        )
