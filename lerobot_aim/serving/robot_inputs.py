"""What the policy server accepts from a robot client: its announced features (at
``SendPolicyInstructions``) and each observation's values (at ``SendObservations``).

Everything is checked where it enters, so that a wrong image layout, a non-finite joint reading or a
malformed AIM entry is refused with a message the client sees, instead of failing later inside
inference (where LeRobot's server only logs it and the client waits for actions forever).
"""

import math

import numpy as np
import torch
from lerobot.utils.constants import OBS_IMAGES, OBS_STATE

from lerobot_aim.serving.episode import EXECUTED_ACTIONS, HISTORY_ONLY

IMAGE_DTYPES = (
    "uint8",
    "float32",
)  # uint8 in 0..255 or float32 in [0, 1], as LeRobot's prepare_image reads them


def _is_image(feature: dict) -> bool:
    return feature["dtype"] in ("image", "video")


def features_problem(policy_config, policy_type: str, lerobot_features: dict) -> str | None:
    """Why the robot's announced features cannot feed the policy of ``policy_config``, or None."""
    for key, ft in lerobot_features.items():
        if not isinstance(ft, dict) or not isinstance(ft.get("dtype"), str) or "shape" not in ft:
            return f"lerobot_features[{key!r}] must be a dict with 'dtype' and 'shape'"
    for key, ft in lerobot_features.items():
        shape = tuple(ft["shape"])
        if _is_image(ft) and (len(shape) != 3 or shape[-1] != 3):
            return f"lerobot_features[{key!r}] has shape {shape}: cameras must be RGB, (height, width, 3)"
    image_features = policy_config.image_features
    robot_images = {k for k, ft in lerobot_features.items() if _is_image(ft)}
    if unknown := sorted(robot_images - set(image_features)):
        return f"the robot's cameras {unknown} are not inputs of this policy (it expects {sorted(image_features)})"
    # AIM reads only its `cameras` (other visual inputs, e.g. value maps, are training targets).
    needed = set(policy_config.image_keys) if policy_type == "aim" else set(image_features)
    if missing := sorted(needed - robot_images):
        return f"this policy needs the cameras {missing}; the robot sends {sorted(robot_images)}"
    state = policy_config.input_features.get(OBS_STATE)
    if state is not None:
        robot_state = lerobot_features.get(OBS_STATE)
        if robot_state is None:
            return f"this policy needs {OBS_STATE}; the robot has no joint features"
        if tuple(robot_state["shape"]) != tuple(state.shape):
            return f"{OBS_STATE} has shape {tuple(robot_state['shape'])}, the policy expects {tuple(state.shape)}"
    return None


def _image_problem(name: str, value, announced: tuple[int, ...]) -> str | None:
    if not isinstance(value, np.ndarray | torch.Tensor):
        return f"{name} must be an image array of shape {announced}, got {type(value).__name__}"
    shape, dtype = tuple(value.shape), str(value.dtype).removeprefix("torch.")
    if dtype not in IMAGE_DTYPES:
        return f"{name} has dtype {dtype}; send uint8 (0-255) or float32 (0-1) pixels"
    if shape != announced:
        if shape == (announced[-1], *announced[:-1]):
            return f"{name} has shape {shape}, channels first; send (height, width, channels) = {announced}"
        return f"{name} has shape {shape}; the robot announced {announced} (height, width, 3 channels)"
    if dtype == "float32" and not bool(np.isfinite(np.asarray(value)).all()):
        return f"{name} has non-finite pixels (NaN or inf)"
    return None


def _number_problem(name: str, value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return f"{name} (a number)"
    if not math.isfinite(float(value)):
        return f"{name} is {float(value)} (it must be finite)"
    return None


def _aim_entries_problem(observation: dict, action_dim: int | None) -> str | None:
    if not isinstance(observation.get(HISTORY_ONLY, False), bool):
        return f"{HISTORY_ONLY} must be a bool"
    executed = observation.get(EXECUTED_ACTIONS, {})
    if not isinstance(executed, dict) or len(executed) > 1000:
        return f"{EXECUTED_ACTIONS} must be a dict of at most 1000 {{env step: action}}"
    for step, action in executed.items():
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            return f"{EXECUTED_ACTIONS} keys must be env steps (ints >= 0), got {step!r}"
        values = torch.as_tensor(action) if isinstance(action, np.ndarray | torch.Tensor) else None
        if values is None or values.is_complex() or values.dtype == torch.bool:
            return f"{EXECUTED_ACTIONS}[{step}] must be a real-valued action tensor"
        values = values.to(torch.float64).flatten()
        if action_dim is not None and values.numel() != action_dim:
            return (
                f"{EXECUTED_ACTIONS}[{step}] has {values.numel()} values, the policy's actions {action_dim}"
            )
        if not bool(torch.isfinite(values).all()):
            return f"{EXECUTED_ACTIONS}[{step}] is not finite"
    return None


def observation_problem(lerobot_features: dict, observation: dict, action_dim: int | None) -> str | None:
    """Why ``observation`` (a raw robot observation) does not match the features the client announced
    (or AIM's entries are malformed), or None; ``action_dim`` is the policy's action size."""
    missing, wrong = [], []
    for key, ft in lerobot_features.items():
        if _is_image(ft):
            name = key.removeprefix(f"{OBS_IMAGES}.")
            if name not in observation:
                missing.append(name)
            elif problem := _image_problem(name, observation[name], tuple(ft["shape"])):
                wrong.append(problem)
        elif ft["dtype"] == "float32" and len(ft["shape"]) == 1:
            for name in ft.get("names") or []:
                if name not in observation:
                    missing.append(name)
                elif problem := _number_problem(name, observation[name]):
                    wrong.append(problem)
    if missing:
        return f"missing robot keys {missing}"
    if wrong:
        return "wrong values: " + "; ".join(wrong)
    return _aim_entries_problem(observation, action_dim)
