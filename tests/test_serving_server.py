"""lerobot-aim-policy-server speaks LeRobot's async protocol: chunks to LeRobot's own client, and
refusals of what is unsafe or does not fit, without dying."""

import logging
import os
import pickle
import shutil
import socket
import threading
import time

import grpc
import pytest

from tests.serving_helpers import (
    ACTIONS_PER_CHUNK,
    CALL_TIMEOUT,
    TASK,
    TouchFile,
    TouchFileViaTensorStorage,
    assert_chunk,
    connect,
    get_actions,
    instructions,
    observation,
    roundtrip,
    rpc_error,
    run_client_until_actions,
    send_instructions,
    send_observation,
    sim_robot_config,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("serving_logs")]


def test_serves_timed_action_chunks_over_lerobots_protocol(policy_server, serving_checkpoint):
    channel, stub = connect(policy_server.port)
    with channel:
        start = time.perf_counter()
        chunk = roundtrip(stub, serving_checkpoint, timestep=5)
        assert_chunk(chunk, timestep=5)
        latencies = []
        last_run = chunk[-1].get_timestep()
        for _ in range(3):
            # As LeRobot's client does: labelled with the last action it ran; the chunk starts at the
            # env step after it (the step this observation is of).
            begin = time.perf_counter()
            send_observation(stub, observation(last_run))
            chunk = get_actions(stub)
            assert_chunk(chunk, timestep=last_run + 1)
            last_run = chunk[-1].get_timestep()
            latencies.append(time.perf_counter() - begin)
    print(
        f"\nfirst chunk (incl. handshake): {1000 * (begin - start):.0f} ms; observation -> chunk: "
        + ", ".join(f"{1000 * t:.0f}" for t in latencies)
        + " ms"
    )


def test_lerobot_robot_client_drives_a_simulated_robot(policy_server, serving_checkpoint):
    """LeRobot's own RobotClient, unchanged, against our server."""
    from lerobot.async_inference.configs import RobotClientConfig
    from lerobot.async_inference.robot_client import RobotClient

    cfg = RobotClientConfig(
        policy_type="aim",
        pretrained_name_or_path=str(serving_checkpoint),
        robot=sim_robot_config(),
        actions_per_chunk=ACTIONS_PER_CHUNK,
        server_address=f"127.0.0.1:{policy_server.port}",
        task=TASK,
        fps=50,
    )
    client = RobotClient(cfg)
    run_client_until_actions(client, want=2 * ACTIONS_PER_CHUNK)


def test_client_that_disconnects_mid_stream_does_not_kill_the_server(policy_server, serving_checkpoint):
    from lerobot.transport import services_pb2

    channel, stub = connect(policy_server.port)
    with channel:
        stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        send_instructions(stub, instructions(serving_checkpoint))
        release = threading.Event()

        def half_an_observation():
            data = pickle.dumps(observation())
            yield services_pb2.Observation(transfer_state=services_pb2.TRANSFER_BEGIN, data=data[:100])
            release.wait(10)

        call = stub.SendObservations.future(half_an_observation(), timeout=CALL_TIMEOUT)
        time.sleep(0.3)
        call.cancel()
        release.set()
    # Gone without closing the stream either: a channel closed mid-call.
    channel, stub = connect(policy_server.port)
    release = threading.Event()

    def stalled():
        yield services_pb2.Observation(transfer_state=services_pb2.TRANSFER_BEGIN, data=b"\x80")
        release.wait(10)

    call = stub.SendObservations.future(stalled(), timeout=CALL_TIMEOUT)
    time.sleep(0.3)
    channel.close()
    release.set()
    assert call.exception(timeout=5).code() == grpc.StatusCode.CANCELLED

    channel, stub = connect(policy_server.port)
    with channel:
        assert_chunk(roundtrip(stub, serving_checkpoint))


def test_malicious_pickles_are_refused_and_others_still_served(
    policy_server, serving_checkpoint, tmp_path, caplog
):
    marker = tmp_path / "pwned"
    channel, stub = connect(policy_server.port)
    with channel, caplog.at_level(logging.ERROR):
        from lerobot.transport import services_pb2

        stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        error = rpc_error(send_instructions, stub, pickle.dumps(TouchFile(marker)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "posix.system" in error.details()

        send_instructions(stub, instructions(serving_checkpoint))
        for evil in (
            TouchFile(marker),
            observation(x=TouchFile(marker)),
            observation(t=TouchFileViaTensorStorage(marker)),
        ):
            error = rpc_error(send_observation, stub, evil)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "posix.system" in error.details()
    assert not marker.exists()
    refusals = [r.getMessage() for r in caplog.records if "Refused" in r.getMessage()]
    assert len(refusals) == 4
    assert all("posix.system" in m and "127.0.0.1" in m for m in refusals), refusals

    channel, stub = connect(policy_server.port)
    with channel:
        assert_chunk(roundtrip(stub, serving_checkpoint))


def test_clients_cannot_choose_the_checkpoint(policy_server, serving_checkpoint, tmp_path):
    from lerobot.transport import services_pb2

    other = tmp_path / "other_checkpoint"
    shutil.copytree(serving_checkpoint, other)
    channel, stub = connect(policy_server.port)
    with channel:
        stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        for spec, says in [
            (instructions(other), "not served"),
            (instructions("lerobot/some-hub-model"), "not served"),
            (instructions(serving_checkpoint, policy_type="act"), "policy type 'act'"),
        ]:
            error = rpc_error(send_instructions, stub, spec)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert says in error.details() and str(serving_checkpoint) in error.details()
        # Another spelling of the served serving_checkpoint is accepted.
        relative = os.path.relpath(serving_checkpoint)
        send_instructions(stub, instructions(relative))
        send_observation(stub, observation())
        assert_chunk(get_actions(stub))


def test_robot_that_does_not_fit_the_policy_is_refused(policy_server, serving_checkpoint):
    from lerobot.transport import services_pb2

    spec = instructions(serving_checkpoint)
    spec.lerobot_features["observation.state"]["shape"] = (7,)
    channel, stub = connect(policy_server.port)
    with channel:
        stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        error = rpc_error(send_instructions, stub, spec)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "shape (7,)" in error.details()
        spec = instructions(serving_checkpoint)
        spec.lerobot_features["observation.images.front"] = spec.lerobot_features.pop(
            "observation.images.head"
        )
        error = rpc_error(send_instructions, stub, spec)
        assert (
            error.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "'observation.images.front'" in error.details()
        )
        spec = instructions(serving_checkpoint)
        spec.lerobot_features["observation.images.head"]["shape"] = (48, 64, 4)
        error = rpc_error(send_instructions, stub, spec)
        assert "cameras must be RGB, (height, width, 3)" in error.details()
        send_instructions(stub, instructions(serving_checkpoint))
        obs = observation()
        del obs.observation["j2.pos"]
        error = rpc_error(send_observation, stub, obs)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "j2.pos" in error.details()
        error = rpc_error(send_observation, stub, observation(**{"j1.pos": "1.0"}))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "j1.pos (a number)" in error.details()


def test_shuts_down_cleanly(extra_policy_server, serving_checkpoint):
    from lerobot.transport import services_pb2

    before = set(threading.enumerate())
    running = extra_policy_server()
    channel, stub = connect(running.port)
    with channel:
        stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        waiting = stub.GetActions.future(services_pb2.Empty(), timeout=CALL_TIMEOUT)  # blocks in the server
        time.sleep(0.1)
        start = time.monotonic()
        running.stop(grace=0.5)
        assert time.monotonic() - start < 5
        waiting.exception(timeout=5)
    assert not [t for t in running.executor._threads if t.is_alive()]  # the workers were joined

    def lingering():
        return [t.name for t in set(threading.enumerate()) - before if not t.daemon]

    deadline = time.monotonic() + 5
    while lingering() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lingering()
    with socket.socket() as sock:  # nothing listens on the port any more (TIME_WAIT sockets aside)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", running.port))
        sock.listen()
