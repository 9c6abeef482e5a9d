"""The allow-list unpickler and the checked messages of LeRobot's async protocol."""

import logging
import pickle
import threading

import numpy as np
import pytest
import torch

from tests.serving_helpers import (
    TouchFile,
    TouchFileViaTensorStorage,
    instructions,
    observation,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("serving_logs")]

CHECKPOINT = "outputs/train/aim/checkpoints/last/pretrained_model"  # only named in the messages


def test_safe_pickle_decodes_what_lerobot_clients_send():
    from lerobot_aim.serving.messages import loads_instructions, loads_observation
    from lerobot_aim.serving.safe_pickle import safe_loads

    obs = observation(
        3,
        state=torch.arange(6, dtype=torch.float32).reshape(2, 3)[:, 1:],
        half=torch.ones(2, dtype=torch.bfloat16),
        flags=torch.tensor([True, False]),
        depth=np.zeros((4, 5), dtype=np.float32),
        scalar=np.float64(1.5),
        nested={"a": [1, 2.0, (3, "x")], "b": {1, 2}},
    )
    back = loads_observation(pickle.dumps(obs))
    assert back.get_timestep() == 3 and back.must_go
    assert np.array_equal(back.get_observation()["head"], obs.get_observation()["head"])
    assert torch.equal(back.get_observation()["state"], obs.get_observation()["state"])
    assert back.get_observation()["half"].dtype == torch.bfloat16
    assert back.get_observation()["scalar"] == 1.5

    spec = instructions(CHECKPOINT, rename_map={"observation.images.top": "observation.images.head"})
    assert loads_instructions(pickle.dumps(spec)) == spec
    assert safe_loads(pickle.dumps({"d": np.dtype("f4")}))["d"] == np.float32
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert loads_observation(pickle.dumps(obs, protocol=protocol)).get_timestep() == 3


@pytest.mark.parametrize(
    "payload, named",
    [
        (lambda p: TouchFile(p), "posix.system"),
        (lambda p: TouchFileViaTensorStorage(p), "posix.system"),
        (lambda p: {"x": TouchFile(p)}, "posix.system"),
        (lambda p: np.array([1, "a"], dtype=object), "object"),
        (lambda p: threading.Lock, "_thread"),
        (lambda p: logging.getLogger, "logging.getLogger"),
    ],
    ids=["os.system", "via-tensor-storage", "nested", "numpy-object-array", "other-class", "function"],
)
def test_safe_pickle_refuses_everything_else(tmp_path, payload, named):
    from lerobot_aim.serving.messages import loads_observation
    from lerobot_aim.serving.safe_pickle import UnsafePayloadError, safe_loads

    marker = tmp_path / "pwned"
    data = pickle.dumps(payload(marker))
    with pytest.raises(UnsafePayloadError, match=named):
        safe_loads(data)
    with pytest.raises(UnsafePayloadError):
        loads_observation(data)
    assert not marker.exists()


def test_safe_pickle_checks_calls_and_mutations():
    """Allowed globals cannot be called, created or mutated beyond what the protocol needs."""
    from lerobot.async_inference.helpers import TimedObservation

    from lerobot_aim.serving.messages import loads_observation
    from lerobot_aim.serving.safe_pickle import UnsafePayloadError, safe_loads

    helpers = b"clerobot.async_inference.helpers\nTimedObservation\n"
    crafted = {
        # BUILD on the class itself would patch it for the whole process.
        helpers + b"(N}Vget_timestep\nI1\nstb.": "setting attributes",
        b"cnumpy\nndarray\n(I1000000000\ntR.": "calling numpy.ndarray",  # a 1 GB allocation
        b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1000000000\ntVb\ntR.": "_reconstruct",
        b"\x80\x02cnumpy\nndarray\n(I1000000000\nt\x81.": "creating numpy.ndarray",
        b"\x80\x02ccollections\nOrderedDict\n)\x81.": "creating collections.OrderedDict",
    }
    for data, says in crafted.items():
        with pytest.raises(UnsafePayloadError, match=says):
            safe_loads(data)
    assert TimedObservation.get_timestep is not None and not isinstance(TimedObservation.get_timestep, int)

    # numpy's dtype: always a fresh copy, so its state cannot change the process-wide float32.
    big_endian = safe_loads(b"cnumpy\ndtype\n(Vf4\nI00\nI00\ntR(I3\nV>\nNNNI-1\nI-1\nI0\ntb.")
    assert big_endian.byteorder == ">" and np.dtype("f4").byteorder == "="

    # A small storage posing as a large tensor (zero strides) is refused.
    with pytest.raises(UnsafePayloadError, match="smaller storage"):
        loads_observation(pickle.dumps(observation(big=torch.zeros(1).expand(1000, 1000))))


def test_safe_pickle_checks_message_structure():
    from lerobot.async_inference.helpers import TimedAction

    from lerobot_aim.serving.messages import loads_instructions, loads_observation
    from lerobot_aim.serving.safe_pickle import UnsafePayloadError

    with pytest.raises(UnsafePayloadError, match="expected TimedObservation"):
        loads_observation(pickle.dumps({"timestep": 0}))
    with pytest.raises(UnsafePayloadError, match="RemotePolicyConfig' is not allowed"):
        loads_observation(pickle.dumps(instructions(CHECKPOINT)))  # each message its own classes
    with pytest.raises(UnsafePayloadError, match="TimedAction"):  # not allowed in an observation
        loads_observation(pickle.dumps(TimedAction(0.0, 0, torch.zeros(2))))
    bad = observation()
    bad.timestep = "0"
    with pytest.raises(UnsafePayloadError, match="timestep"):
        loads_observation(pickle.dumps(bad))
    with pytest.raises(UnsafePayloadError, match="malformed"):
        loads_instructions(b"\x80\x04not a pickle")


# ----------------------------------------------------------------------------------------------
# The server


def test_robot_client_refuses_malicious_and_non_finite_action_chunks(tmp_path):
    from lerobot.async_inference.helpers import TimedAction
    from lerobot.transport import services_pb2

    from lerobot_aim.serving.robot_client import CheckedStub

    marker = tmp_path / "pwned"

    class Stub:
        def __init__(self, data):
            self.data = data

        def GetActions(self, request, **kwargs):  # noqa: N802
            return services_pb2.Actions(data=self.data)

    def received(chunk):
        stub = CheckedStub(Stub(pickle.dumps(chunk)), logging.getLogger("test"), on_refusal=None)
        return stub.GetActions(None).data

    good = [TimedAction(0.0, i, torch.full((4,), float(i))) for i in range(3)]
    assert [a.get_timestep() for a in pickle.loads(received(good))] == [0, 1, 2]
    assert received([TouchFile(marker)]) == b""
    assert not marker.exists()
    for bad in (float("nan"), float("inf")):
        assert received([*good, TimedAction(0.0, 3, torch.tensor([0.0, bad, 0.0, 0.0]))]) == b""
