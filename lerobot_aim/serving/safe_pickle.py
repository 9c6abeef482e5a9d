"""Allow-list unpickling of the messages of LeRobot's async inference protocol.

LeRobot's ``robot_client`` sends pickles: a ``RemotePolicyConfig`` (policy instructions) and
``TimedObservation``s (robot observations: floats, numpy images, maybe torch tensors, the task
string); its ``policy_server`` sends back a pickled ``list[TimedAction]``. ``pickle.loads`` on such
bytes runs whatever callable the bytes name, so a peer that can reach the port can run code.

:func:`safe_loads` decodes them with :class:`RestrictedUnpickler`, which resolves only the globals
of one table (:data:`LEAF_GLOBALS` plus the message's own class, :data:`MESSAGE_GLOBALS`); each entry
says what the name resolves to and whether pickle's REDUCE may call it:

- the protocol's dataclass of that message (``TimedObservation``, ``RemotePolicyConfig`` or
  ``TimedAction``), never called;
- numpy arrays, scalars and dtypes (object dtypes are refused: their elements would be arbitrary;
  ``_reconstruct`` only makes the empty stub that ``__setstate__`` fills, so no huge allocation;
  ``dtype`` always makes a new dtype, never numpy's shared one);
- torch tensors: ``torch._utils._rebuild_tensor_v2`` and the storage bytes, which the stock
  ``torch.storage._load_from_bytes`` reads with ``torch.load(weights_only=False)`` (itself a full
  unpickler). Here they are read with ``torch.load(weights_only=True)``, torch's own restricted
  unpickler, and must give a storage; torch dtypes, ``torch.Size``, ``torch.device``;
- ``collections.OrderedDict`` (the tensor's hook slot), ``set``, ``frozenset``, ``complex`` (what
  older pickle protocols name); for protocols 0-2, ``copyreg._reconstructor`` (only
  ``object.__new__`` of the protocol's dataclasses) and ``_codecs.encode`` (only latin1 text, how
  those protocols spell ``bytes``).

Everything else (``os.system``, ``builtins.eval``, ``getattr``, any other class or function) raises
:class:`UnsafePayloadError` naming the global *before* anything is called. Persistent ids are
refused too, and the opcodes that call or mutate (REDUCE, NEWOBJ, BUILD) are checked (see
:class:`RestrictedUnpickler`). :mod:`lerobot_aim.serving.messages` then checks the decoded structure.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedAction, TimedObservation

try:  # numpy 2
    from numpy._core import multiarray, numeric
except ImportError:  # numpy 1
    from numpy.core import multiarray, numeric


class UnsafePayloadError(pickle.UnpicklingError):
    """A message named something outside the allow-list, or is not a protocol message."""


@dataclass(frozen=True)
class Allowed:
    """What an allowed global resolves to, and whether pickle's REDUCE may call it."""

    value: Any
    callable: bool = True


def _safe_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """Always a new dtype (BUILD then sets its state), never numpy's shared builtin one."""
    if not isinstance(obj, str | bytes):
        raise UnsafePayloadError(f"numpy dtype from {type(obj).__name__} (only dtype strings)")
    dtype = np.dtype(obj, bool(align), True)
    if dtype.hasobject:
        raise UnsafePayloadError(f"numpy object dtype {dtype!r} (arbitrary Python objects)")
    return dtype


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's array stub (its data comes next, by ``__setstate__``): only an empty ndarray."""
    if subtype is not np.ndarray or tuple(shape) not in ((0,), ()):
        raise UnsafePayloadError(
            f"numpy _reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r}) (arrays pickle as (ndarray, (0,)))"
        )
    return multiarray._reconstruct(subtype, shape, dtype)


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (pickle protocols 0 and 1) for the protocol's dataclasses only."""
    if base is not object or state is not None or cls not in PROTOCOL_CLASSES:
        raise UnsafePayloadError(f"copyreg._reconstructor({cls!r}, {base!r})")
    return object.__new__(cls)


def _safe_codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """How pickle protocols 0-2 spell ``bytes``: ``_codecs.encode(str, "latin1")`` only."""
    if not isinstance(text, str) or encoding != "latin1" or errors != "strict":
        raise UnsafePayloadError(
            f"_codecs.encode(..., {encoding!r}) (only latin1 text, how pickle spells bytes)"
        )
    return text.encode("latin1")


def _safe_load_from_bytes(data: Any) -> torch.storage.TypedStorage:
    """Tensor storage bytes, read by torch's weights-only unpickler (the stock function uses a full one)."""
    if not isinstance(data, bytes | bytearray):
        raise UnsafePayloadError(f"tensor storage must be bytes, got {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UnsafePayloadError(f"tensor storage refused by torch's weights-only unpickler: {e}") from None
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise UnsafePayloadError(f"tensor storage decoded to {type(storage).__name__}, not a storage")
    return storage


def _numpy_core(submodule: str, name: str, value: Any) -> dict[tuple[str, str], Allowed]:
    """numpy internals under both spellings (numpy 2 pickles ``numpy._core``, numpy 1 ``numpy.core``)."""
    return {(f"numpy.{core}.{submodule}", name): Allowed(value) for core in ("_core", "core")}


# The one table of what any message may name besides its own class: leaves (containers, numpy and
# torch values), with checked stand-ins where the real global would do more than a message needs.
LEAF_GLOBALS: dict[tuple[str, str], Allowed] = {
    ("builtins", "set"): Allowed(set),
    ("builtins", "frozenset"): Allowed(frozenset),
    ("builtins", "complex"): Allowed(complex),
    ("builtins", "object"): Allowed(object, callable=False),  # copyreg._reconstructor's base
    ("collections", "OrderedDict"): Allowed(OrderedDict),
    ("numpy", "ndarray"): Allowed(np.ndarray, callable=False),  # _reconstruct's subtype
    ("numpy", "dtype"): Allowed(_safe_dtype),
    **_numpy_core("multiarray", "_reconstruct", _safe_reconstruct),
    **_numpy_core("multiarray", "scalar", multiarray.scalar),
    **_numpy_core("numeric", "_frombuffer", numeric._frombuffer),
    ("torch._utils", "_rebuild_tensor_v2"): Allowed(torch._utils._rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): Allowed(torch._utils._rebuild_tensor),
    ("torch.storage", "_load_from_bytes"): Allowed(_safe_load_from_bytes),
    ("torch", "Size"): Allowed(torch.Size),
    ("torch", "device"): Allowed(torch.device),
    **{
        ("torch", name): Allowed(getattr(torch, name), callable=False)
        for name in dir(torch)
        if isinstance(getattr(torch, name, None), torch.dtype)
    },
    # How pickle protocols 0-2 spell plain objects and bytes.
    ("copyreg", "_reconstructor"): Allowed(_safe_reconstructor),
    ("_codecs", "encode"): Allowed(_safe_codecs_encode),
}

# Each message kind's own class: made by NEWOBJ (or copyreg), filled by BUILD, never called.
MESSAGE_GLOBALS: dict[str, dict[tuple[str, str], Allowed]] = {
    kind: {(cls.__module__, cls.__qualname__): Allowed(cls, callable=False)}
    for kind, cls in (
        ("observation", TimedObservation),
        ("instructions", RemotePolicyConfig),
        ("actions", TimedAction),
    )
}
PROTOCOL_CLASSES = tuple(a.value for table in MESSAGE_GLOBALS.values() for a in table.values())
ALLOWED_GLOBALS: dict[tuple[str, str], Allowed] = {
    **LEAF_GLOBALS,
    **{key: a for table in MESSAGE_GLOBALS.values() for key, a in table.items()},
}


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the globals in ``allowed``, and that calls and mutates only
    what the protocol needs.

    Resolving a global is not enough to be safe: pickle's REDUCE calls whatever callable is on the
    stack, NEWOBJ calls ``cls.__new__``, and BUILD sets attributes on whatever object is on the stack
    (a class or a function returned by ``find_class`` included, which would change them for the whole
    process). So this is Python's own unpickler (``pickle._Unpickler``) with those three opcodes
    checked: REDUCE only calls the entries of ``allowed`` marked callable, NEWOBJ only makes the
    protocol's dataclasses, BUILD only fills a dataclass instance's ``__dict__`` or sets the state of
    a numpy array or dtype made by this message. The messages are a few opcodes around large byte
    strings, so the pure-Python decoder costs little.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, allowed: Mapping[tuple[str, str], Allowed] = ALLOWED_GLOBALS, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = dict(allowed)
        self._callables = tuple(a.value for a in self._allowed.values() if a.callable)

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names that protocols 0-2 write (copy_reg, __builtin__), as pickle maps them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (allowed := self._allowed.get((module, name))) is None:
            raise UnsafePayloadError(f"global '{module}.{name}' is not allowed")
        return allowed.value

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePayloadError("persistent ids are not allowed")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is allowed for allowed in self._callables):
            raise UnsafePayloadError(f"calling {_name(func)} is not allowed")
        if not isinstance(args, tuple):
            raise UnsafePayloadError("REDUCE arguments must be a tuple")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls: Any, args: Any, kwargs: Any) -> None:
        if cls not in PROTOCOL_CLASSES or args or kwargs:
            raise UnsafePayloadError(f"creating {_name(cls)} is not allowed")
        self.append(cls.__new__(cls))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self._new(cls, args, None)

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._new(cls, args, kwargs)

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST / OBJ: Python 2 classes
        raise UnsafePayloadError(f"INST/OBJ of {_name(klass)} is not allowed")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.ndarray | np.dtype) and not isinstance(inst, type):
            if type(inst) is not np.ndarray and not isinstance(inst, np.dtype):
                raise UnsafePayloadError(f"setting the state of {_name(type(inst))} is not allowed")
            inst.__setstate__(state)
            return
        if (
            type(inst) in PROTOCOL_CLASSES
            and isinstance(state, dict)
            and all(isinstance(k, str) for k in state)
        ):
            inst.__dict__.update(state)
            return
        raise UnsafePayloadError(f"setting attributes of {_name(inst)} is not allowed")

    dispatch[pickle.BUILD[0]] = load_build


# What the pickle decoder raises on bytes that are not a well-formed pickle (truncated, corrupted,
# nested too deep, sizes that do not fit): reported as a malformed message.
DECODER_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    RuntimeError,
    OverflowError,
    MemoryError,
    RecursionError,
)


def safe_loads(data: bytes, allowed: Mapping[tuple[str, str], Allowed] = ALLOWED_GLOBALS) -> Any:
    """Unpickle ``data`` resolving only ``allowed`` globals; :class:`UnsafePayloadError` otherwise.

    Malformed bytes raise :class:`UnsafePayloadError` too (with the decoder's message).
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed=allowed).load()
    except UnsafePayloadError:
        raise
    except DECODER_ERRORS as e:
        raise UnsafePayloadError(f"malformed message: {type(e).__name__}: {e}") from None


def loads_message(data: bytes, kind: str) -> Any:
    """Unpickle a message of ``kind`` ("observation", "instructions" or "actions"): the leaves and
    that message's own class only."""
    return safe_loads(data, {**LEAF_GLOBALS, **MESSAGE_GLOBALS[kind]})
