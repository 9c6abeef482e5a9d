"""Faults at the policy server, answered with a message the client sees: a policy that outputs NaN,
observations whose images are not what the robot announced, and clients that stall mid-stream."""

import math
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import torch

from tests.serving_helpers import (
    CALL_TIMEOUT,
    CAMERA_HW,
    aim_client,
    assert_chunk,
    connect,
    get_actions,
    instructions,
    observation,
    rpc_error,
    run_client,
    send_instructions,
    send_observation,
    server_config,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("serving_logs")]


@pytest.fixture(scope="module")
def nan_checkpoint(serving_checkpoint, tmp_path_factory):
    """The serving checkpoint with every weight NaN, saved as a checkpoint."""
    from lerobot_aim.modeling_aim import AIMPolicy

    path = tmp_path_factory.mktemp("nan") / "aim_nan_ckpt"
    shutil.copytree(serving_checkpoint, path)  # the processors
    policy = AIMPolicy.from_pretrained(path)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.fill_(math.nan)
    policy.save_pretrained(path)
    return path


def test_a_checkpoint_with_non_finite_weights_is_not_served(nan_checkpoint):
    from lerobot_aim.serving.policy_server import start_server

    with pytest.raises(ValueError, match=r"not finite .*NaN or inf"):
        start_server(server_config(nan_checkpoint))


def test_non_finite_actions_never_reach_the_robot(serving_checkpoint):
    """Weights that go bad after loading (here: set to NaN in the running server): the chunk is refused."""
    from lerobot.transport import services_pb2

    from lerobot_aim.serving.policy_server import start_server

    running = start_server(server_config(serving_checkpoint))
    try:
        with torch.no_grad():
            for served in running.servicer.served:
                for parameter in served.policy.parameters():
                    parameter.fill_(math.nan)
        channel, stub = connect(running.port)
        with channel:
            stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
            send_instructions(stub, instructions(serving_checkpoint))
            send_observation(stub, observation())
            error = rpc_error(stub.GetActions, services_pb2.Empty(), timeout=CALL_TIMEOUT)
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "not finite" in error.details()  # the policy refuses the chunk; the server says why

        # lerobot-aim-robot-client stops with that message; its robot never moved.
        client = aim_client(running.port, serving_checkpoint)
        assert run_client(client, want=1, limit_s=20) == []
        assert "GetActions" in client.failure and "not finite" in client.failure
    finally:
        running.stop()


@pytest.mark.parametrize(
    "image, says",
    [
        (
            np.zeros((3, *CAMERA_HW), np.uint8),
            f"head has shape (3, {CAMERA_HW[0]}, {CAMERA_HW[1]}), channels first",
        ),
        (np.zeros((*CAMERA_HW, 4), np.uint8), f"head has shape ({CAMERA_HW[0]}, {CAMERA_HW[1]}, 4)"),
        (np.zeros((*CAMERA_HW, 3), np.int64), "head has dtype int64"),
        (torch.full((*CAMERA_HW, 3), math.nan), "head has non-finite pixels"),
    ],
    ids=["channels-first", "4-channels", "int64", "nan-float"],
)
def test_images_that_do_not_match_the_robot_are_refused(policy_server, serving_checkpoint, image, says):
    from lerobot.transport import services_pb2

    channel, stub = connect(policy_server.port)
    with channel:
        stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        send_instructions(stub, instructions(serving_checkpoint))
        error = rpc_error(send_observation, stub, observation(head=image))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and says in error.details(), error.details()
        error = rpc_error(send_observation, stub, observation(**{"j1.pos": math.nan}))
        assert "j1.pos is nan" in error.details()
        send_observation(stub, observation())  # a good one still goes through
        assert_chunk(get_actions(stub))


def test_a_robot_sending_channels_first_images_stops_the_client(
    policy_server, serving_checkpoint, monkeypatch
):
    from lerobot_aim.serving.sim_robot import AIMSimRobot

    observe = AIMSimRobot.get_observation

    def channels_first(self):
        raw = observe(self)
        raw["head"] = raw["head"].transpose(2, 0, 1)
        return raw

    monkeypatch.setattr(AIMSimRobot, "get_observation", channels_first)
    client = aim_client(policy_server.port, serving_checkpoint)
    start = time.monotonic()
    assert run_client(client, want=1, limit_s=20) == []
    assert time.monotonic() - start < 10
    assert "SendObservations (INVALID_ARGUMENT)" in client.failure and "channels first" in client.failure


def test_stalled_observation_streams_leave_workers_for_other_clients(policy_server, serving_checkpoint):
    """Four clients begin an observation and never finish it (the default server: 4 workers, no
    token): a fifth is still answered, its observation goes through within --stream_timeout_s, and
    the stalled streams end with a message."""
    from lerobot.transport import services_pb2

    channel, stub = connect(policy_server.port)
    stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
    send_instructions(stub, instructions(serving_checkpoint))
    release, stalled = threading.Event(), []

    def half_an_observation():
        yield services_pb2.Observation(transfer_state=services_pb2.TRANSFER_BEGIN, data=b"\x80\x04")
        release.wait(60)

    for _ in range(4):
        stalled_channel, stalled_stub = connect(policy_server.port)
        stalled.append(
            (stalled_channel, stalled_stub.SendObservations.future(half_an_observation(), timeout=60))
        )
    time.sleep(0.5)
    try:
        begin = time.monotonic()
        stub.Ready(services_pb2.Empty(), timeout=2)
        send_instructions(stub, instructions(serving_checkpoint))
        assert time.monotonic() - begin < 2
        timeout_s = policy_server.servicer.streams.timeout_s
        while True:  # refused as busy (UNAVAILABLE) while the stalled streams hold their workers
            try:
                send_observation(stub, observation())
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e.details()
                assert time.monotonic() - begin < timeout_s + 3
                time.sleep(0.2)
        assert_chunk(get_actions(stub))
        outcomes = sorted((f.exception(timeout=10).code().name, f.exception().details()) for _, f in stalled)
        busy = "2 observations are arriving already"
        assert [code for code, _ in outcomes] == ["RESOURCE_EXHAUSTED"] * 2 + ["UNAVAILABLE"] * 2, outcomes
        assert all(f"still incomplete after {timeout_s:g} s" in details for _, details in outcomes[:2])
        assert all(busy in details for _, details in outcomes[2:])
    finally:
        release.set()
        channel.close()
        for stalled_channel, _ in stalled:
            stalled_channel.close()
