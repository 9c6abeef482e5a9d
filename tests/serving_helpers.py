"""Shared pieces of the serving tests (``tests/test_serving_*.py``): a tiny checkpoint, servers on
loopback, and LeRobot's protocol spoken call by call, as ``RobotClient`` speaks it.

Loopback only; every call has a timeout and every loop a bound. ``tests/conftest.py`` registers
this module as a plugin, so that its fixtures (one checkpoint and one server for the session) serve
every serving test module.
"""

import os
import pickle
import threading
import time

import grpc
import numpy as np
import pytest
import torch

from tests.conftest import save_tiny_checkpoint

CALL_TIMEOUT = 30  # seconds, per gRPC call
JOINTS = ["j0", "j1", "j2", "j3"]
CAMERA_HW = (48, 64)  # the simulated camera; the server resizes to the policy's 32x32
ACTIONS_PER_CHUNK = 6
TASK = "pick up the cube"


class TouchFile:
    """A pickle that runs ``touch <path>`` when a plain ``pickle.loads`` reads it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class TouchFileViaTensorStorage:
    """The same, hidden in tensor storage bytes (``torch.storage._load_from_bytes`` reads them with
    ``torch.load(weights_only=False)`` in stock torch)."""

    def __init__(self, path):
        self.inner = pickle.dumps(TouchFile(path), protocol=2)  # as torch writes storages

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.inner,))


# ----------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def serving_logs(tmp_path_factory):
    """LeRobot's async server and client modules create ``logs/`` (and open log files there) in the
    working directory when first imported: import them from a temporary folder."""
    path = tmp_path_factory.mktemp("serving_logs")
    old = os.getcwd()
    os.chdir(path)
    try:
        import lerobot_aim.serving.policy_server  # noqa: F401
        import lerobot_aim.serving.robot_client  # noqa: F401
    finally:
        os.chdir(old)
    return path


@pytest.fixture(scope="session")
def serving_checkpoint(tmp_path_factory):
    """A tiny AIM checkpoint: one 32x32 `head` camera, 4 joints, 4-d actions."""
    return save_tiny_checkpoint(
        tmp_path_factory.mktemp("serving") / "aim_tiny_ckpt", ["head"], image_hw=(32, 32)
    )


def server_config(checkpoint, **kwargs):
    from lerobot_aim.serving.configs import AIMPolicyServerConfig, ServedPolicyConfig

    kwargs.setdefault("port", 0)
    kwargs.setdefault("obs_queue_timeout", 0.5)
    kwargs.setdefault("inference_latency", 0.0)
    kwargs.setdefault("fps", 50)
    return AIMPolicyServerConfig(policy=ServedPolicyConfig(path=str(checkpoint)), **kwargs)


@pytest.fixture(scope="session")
def policy_server(serving_logs, serving_checkpoint):
    """The server, started from the checkpoint path like the CLI does (default limits, no token)."""
    from lerobot_aim.serving.policy_server import start_server

    running = start_server(server_config(serving_checkpoint))
    yield running
    running.stop()


@pytest.fixture
def extra_policy_server(policy_server, serving_checkpoint):
    """Start more servers (token, TLS, small caps) sharing the already loaded checkpoint."""
    from lerobot_aim.serving.policy_server import start_server

    started = []

    def start(**kwargs):
        running = start_server(
            server_config(serving_checkpoint, **kwargs), policies=policy_server.servicer.served
        )
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


# ----------------------------------------------------------------------------------------------
# The protocol, call by call


def robot_features(camera_hw=CAMERA_HW):
    from lerobot.utils.feature_utils import hw_to_dataset_features

    hw = {**{f"{j}.pos": float for j in JOINTS}, "head": (*camera_hw, 3)}
    return hw_to_dataset_features(hw, "observation", use_video=False)


def instructions(checkpoint, policy_type="aim", **kwargs):
    from lerobot.async_inference.helpers import RemotePolicyConfig

    return RemotePolicyConfig(
        policy_type, str(checkpoint), robot_features(), ACTIONS_PER_CHUNK, "cpu", **kwargs
    )


def observation(timestep=0, must_go=True, **extra):
    from lerobot.async_inference.helpers import TimedObservation

    rng = np.random.default_rng(timestep)
    raw = {f"{j}.pos": float(i + timestep) for i, j in enumerate(JOINTS)}
    raw["head"] = rng.integers(0, 256, (*CAMERA_HW, 3), dtype=np.uint8)
    raw["task"] = TASK
    raw.update(extra)
    return TimedObservation(timestamp=time.time(), timestep=timestep, observation=raw, must_go=must_go)


def connect(port, security=None, host="127.0.0.1", **kwargs):
    """A channel and stub the way RobotClient makes them (``security``: token / TLS files, kwargs:
    ``tls``, ``tls_server_name``; see make_channel)."""
    from lerobot.transport import services_pb2_grpc
    from lerobot.transport.utils import grpc_channel_options

    from lerobot_aim.serving.channel import make_channel

    channel = make_channel(f"{host}:{port}", security, options=grpc_channel_options(max_attempts=2), **kwargs)
    return channel, services_pb2_grpc.AsyncInferenceStub(channel)


def send_instructions(stub, spec):
    from lerobot.transport import services_pb2

    data = spec if isinstance(spec, bytes) else pickle.dumps(spec)
    stub.SendPolicyInstructions(services_pb2.PolicySetup(data=data), timeout=CALL_TIMEOUT)


def send_observation(stub, obs):
    from lerobot.transport import services_pb2
    from lerobot.transport.utils import send_bytes_in_chunks

    data = obs if isinstance(obs, bytes) else pickle.dumps(obs)
    stub.SendObservations(send_bytes_in_chunks(data, services_pb2.Observation), timeout=CALL_TIMEOUT)


def get_actions(stub, attempts=5):
    """GetActions until a chunk comes (the server answers empty while no observation is queued)."""
    from lerobot.transport import services_pb2

    for _ in range(attempts):
        reply = stub.GetActions(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        if reply.data:
            return pickle.loads(reply.data)
    raise AssertionError("no action chunk")


def roundtrip(stub, checkpoint, timestep=0):
    """Ready, instructions, one observation, one chunk: what RobotClient does, call by call."""
    from lerobot.transport import services_pb2

    stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
    send_instructions(stub, instructions(checkpoint))
    send_observation(stub, observation(timestep))
    return get_actions(stub)


def assert_chunk(chunk, timestep=0):
    from lerobot.async_inference.helpers import TimedAction

    assert len(chunk) == ACTIONS_PER_CHUNK
    assert all(isinstance(a, TimedAction) for a in chunk)
    assert [a.get_timestep() for a in chunk] == list(range(timestep, timestep + ACTIONS_PER_CHUNK))
    for a in chunk:
        assert a.get_action().shape == (4,)
        assert torch.isfinite(a.get_action()).all()


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def sim_robot_config(camera_hw=CAMERA_HW, seed=0):
    from lerobot_aim.serving.sim_robot import AIMSimRobotConfig

    return AIMSimRobotConfig(joints=JOINTS, camera_height=camera_hw[0], camera_width=camera_hw[1], seed=seed)


def aim_client(port, checkpoint, **kwargs):
    """A ``lerobot-aim-robot-client`` of the simulated robot (kwargs: more of its config)."""
    from lerobot_aim.serving.robot_client import AIMRobotClient, AIMRobotClientConfig

    kwargs.setdefault("robot", sim_robot_config())
    kwargs.setdefault("actions_per_chunk", ACTIONS_PER_CHUNK)
    kwargs.setdefault("fps", 50)
    return AIMRobotClient(
        AIMRobotClientConfig(
            policy_type="aim",
            pretrained_name_or_path=str(checkpoint),
            server_address=f"127.0.0.1:{port}",
            **kwargs,
        )
    )


def run_client(client, want, limit_s=40.0):
    """Run a RobotClient's two threads until its robot has run ``want`` actions (or the client
    stops itself), then stop it; returns the actions the robot ran."""
    assert client.start()
    receiver = threading.Thread(target=client.receive_actions, daemon=True)
    controller = threading.Thread(target=client.control_loop, kwargs={"task": TASK}, daemon=True)
    receiver.start()
    controller.start()
    deadline = time.monotonic() + limit_s
    try:
        while len(client.robot.actions) < want and client.running and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.stop()
        controller.join(timeout=10)
        receiver.join(timeout=10 + CALL_TIMEOUT)
    assert not controller.is_alive() and not receiver.is_alive()
    return list(client.robot.actions)


def run_client_until_actions(client, want, limit_s=40.0):
    actions = run_client(client, want, limit_s)
    assert len(actions) >= want, f"the robot got {len(actions)} actions"
    assert all(set(a) == {f"{j}.pos" for j in JOINTS} for a in actions)
    assert all(np.isfinite(list(a.values())).all() for a in actions)
    return actions
