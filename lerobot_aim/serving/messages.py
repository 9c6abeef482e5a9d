"""The messages of LeRobot's async protocol, decoded safely and checked.

:func:`loads_observation`, :func:`loads_instructions` and :func:`loads_actions` unpickle a message
with the allow-list unpickler (:mod:`lerobot_aim.serving.safe_pickle`, that message's own class
only) and check the decoded structure: the right top-level class, only its own fields, plain leaves,
tensors no larger than their storage. Anything else raises :class:`UnsafePayloadError`, so nothing
outside the protocol reaches the server (or, for action chunks, the robot).
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import torch
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedAction, TimedObservation

from lerobot_aim.serving.safe_pickle import UnsafePayloadError, loads_message

_MAX_DEPTH = 8


def _check_leaf(value: Any, where: str, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise UnsafePayloadError(f"{where}: nested deeper than {_MAX_DEPTH}")
    if value is None or isinstance(value, bool | int | str | bytes):
        return
    if isinstance(value, float | complex):
        return
    if isinstance(value, np.ndarray | np.generic):
        if value.dtype.hasobject:
            raise UnsafePayloadError(f"{where}: numpy object array")
        return
    if isinstance(value, torch.Tensor):
        if type(value) is not torch.Tensor:
            raise UnsafePayloadError(f"{where}: tensor subclass {type(value).__name__}")
        if value._backward_hooks:
            raise UnsafePayloadError(f"{where}: tensor with hooks")
        if value.numel() * value.element_size() > value.untyped_storage().nbytes():
            # Zero or overlapping strides: a small payload posing as a huge tensor.
            raise UnsafePayloadError(f"{where}: tensor of {tuple(value.shape)} over a smaller storage")
        return
    if isinstance(value, torch.dtype | torch.device):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise UnsafePayloadError(f"{where}: key of type {type(k).__name__}")
            _check_leaf(v, f"{where}[{k!r}]", depth + 1)
        return
    if isinstance(value, list | tuple | set | frozenset):
        for i, v in enumerate(value):
            _check_leaf(v, f"{where}[{i}]", depth + 1)
        return
    raise UnsafePayloadError(f"{where}: value of type {type(value).__module__}.{type(value).__qualname__}")


def _check_dataclass(obj: Any, cls: type, where: str) -> None:
    if type(obj) is not cls or not is_dataclass(obj):
        raise UnsafePayloadError(
            f"{where}: expected {cls.__name__}, got {type(obj).__module__}.{type(obj).__qualname__}"
        )
    names = {f.name for f in fields(cls)}
    extra = set(vars(obj)) - names
    if extra:
        raise UnsafePayloadError(f"{where}: unexpected attributes {sorted(extra)} on {cls.__name__}")


def _check_number(value: Any, where: str, kind: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UnsafePayloadError(f"{where} must be {kind}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsafePayloadError(f"{where} must be finite")


def check_observation(obj: Any) -> TimedObservation:
    """``obj`` as a ``TimedObservation`` of plain values, or :class:`UnsafePayloadError`."""
    _check_dataclass(obj, TimedObservation, "observation message")
    missing = {"timestamp", "timestep", "observation"} - set(vars(obj))
    if missing:
        raise UnsafePayloadError(f"observation message: missing {sorted(missing)}")
    _check_number(obj.timestamp, "timestamp", (int, float))
    _check_number(obj.timestep, "timestep", int)
    if obj.timestep < 0:
        raise UnsafePayloadError("timestep must be >= 0")
    if not isinstance(obj.must_go, bool):
        raise UnsafePayloadError("must_go must be a bool")
    if not isinstance(obj.observation, dict) or not all(isinstance(k, str) for k in obj.observation):
        raise UnsafePayloadError("observation must be a dict with string keys")
    _check_leaf(obj.observation, "observation")
    return obj


def check_instructions(obj: Any) -> RemotePolicyConfig:
    """``obj`` as a ``RemotePolicyConfig`` of plain values, or :class:`UnsafePayloadError`."""
    _check_dataclass(obj, RemotePolicyConfig, "policy instructions")
    if not hasattr(obj, "rename_map"):  # sent by a client whose RemotePolicyConfig predates the field
        obj.rename_map = {}
    missing = {"policy_type", "pretrained_name_or_path", "lerobot_features", "actions_per_chunk"} - set(
        vars(obj)
    )
    if missing:
        raise UnsafePayloadError(f"policy instructions: missing {sorted(missing)}")
    for name in ("policy_type", "pretrained_name_or_path", "device"):
        if not isinstance(getattr(obj, name), str):
            raise UnsafePayloadError(f"{name} must be a string")
    _check_number(obj.actions_per_chunk, "actions_per_chunk", int)
    if not isinstance(obj.lerobot_features, dict):
        raise UnsafePayloadError("lerobot_features must be a dict")
    _check_leaf(obj.lerobot_features, "lerobot_features")
    if not isinstance(obj.rename_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.rename_map.items()
    ):
        raise UnsafePayloadError("rename_map must map strings to strings")
    return obj


def check_actions(obj: Any) -> list[TimedAction]:
    """``obj`` as a ``list[TimedAction]`` of finite real tensors, or :class:`UnsafePayloadError` (a
    robot must never be handed a NaN or infinite action)."""
    if not isinstance(obj, list):
        raise UnsafePayloadError(f"actions message: expected a list, got {type(obj).__name__}")
    for i, action in enumerate(obj):
        _check_dataclass(action, TimedAction, f"actions[{i}]")
        _check_number(action.timestamp, f"actions[{i}].timestamp", (int, float))
        _check_number(action.timestep, f"actions[{i}].timestep", int)
        if not isinstance(action.action, torch.Tensor):
            raise UnsafePayloadError(f"actions[{i}].action must be a tensor")
        _check_leaf(action.action, f"actions[{i}].action")
        if action.action.is_complex() or not bool(torch.isfinite(action.action).all()):
            raise UnsafePayloadError(f"actions[{i}].action is not finite (NaN or inf): the chunk is not run")
    return obj


def loads_observation(data: bytes) -> TimedObservation:
    """Decode a ``SendObservations`` payload."""
    return check_observation(loads_message(data, "observation"))


def loads_instructions(data: bytes) -> RemotePolicyConfig:
    """Decode a ``SendPolicyInstructions`` payload."""
    return check_instructions(loads_message(data, "instructions"))


def loads_actions(data: bytes) -> list[TimedAction]:
    """Decode a ``GetActions`` payload (client side)."""
    return check_actions(loads_message(data, "actions"))
