"""The channel and the command lines: token, TLS, caps, loopback binding, and start-up errors said as
what they are (a bad certificate, a missing checkpoint), checked through the CLI entry points."""

import logging
import shutil
import subprocess
import sys

import grpc
import pytest

from tests.serving_helpers import (
    ACTIONS_PER_CHUNK,
    CALL_TIMEOUT,
    aim_client,
    assert_chunk,
    connect,
    instructions,
    observation,
    roundtrip,
    rpc_error,
    run_client_until_actions,
    send_instructions,
    send_observation,
    server_config,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("serving_logs")]

needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs openssl to make a certificate"
)


def make_certificate(folder, name="server"):
    """A self-signed certificate for localhost and its key (PEM files)."""
    cert, key = folder / f"{name}_cert.pem", folder / f"{name}_key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([*openssl, *subject, *files], check=True, capture_output=True, timeout=60)
    return cert, key


def run_server_cli(monkeypatch, *args) -> str:
    """``lerobot-aim-policy-server ARGS`` in this process; the message it exits with."""
    from lerobot_aim.serving.policy_server import main

    monkeypatch.setattr(sys, "argv", ["lerobot-aim-policy-server", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return str(exit_info.value.code)


def test_token_is_required_on_every_call(extra_policy_server, serving_checkpoint, caplog):
    from lerobot.transport import services_pb2

    from lerobot_aim.serving.configs import ChannelSecurityConfig

    running = extra_policy_server(token="s3cret-token")
    for token in (None, "wrong"):
        channel, stub = connect(
            running.port, ChannelSecurityConfig(token=token, token_env="NO_SUCH_VARIABLE")
        )
        with channel, caplog.at_level(logging.ERROR):
            for call, args in (
                (stub.Ready, (services_pb2.Empty(),)),
                (send_instructions, (stub, instructions(serving_checkpoint))),
                (send_observation, (stub, observation())),
                (stub.GetActions, (services_pb2.Empty(),)),
            ):
                kwargs = {"timeout": CALL_TIMEOUT} if hasattr(call, "future") else {}
                error = rpc_error(call, *args, **kwargs)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert sum("Refused" in r.getMessage() for r in caplog.records) == 8
    channel, stub = connect(running.port, ChannelSecurityConfig(token="s3cret-token"))
    with channel:
        assert_chunk(roundtrip(stub, serving_checkpoint))


def test_aim_robot_client_sends_the_token(extra_policy_server, serving_checkpoint, monkeypatch):
    running = extra_policy_server(token="env-token")
    monkeypatch.setenv("LEROBOT_AIM_SERVER_TOKEN", "env-token")
    run_client_until_actions(aim_client(running.port, serving_checkpoint), want=ACTIONS_PER_CHUNK)


@needs_openssl
def test_tls(extra_policy_server, serving_checkpoint, tmp_path):
    from lerobot.transport import services_pb2

    from lerobot_aim.serving.configs import ChannelSecurityConfig

    cert, key = make_certificate(tmp_path)
    running = extra_policy_server(tls_cert=str(cert), tls_key=str(key), token="t")
    assert running.tls
    channel, stub = connect(running.port, ChannelSecurityConfig(tls_ca=str(cert), token="t"))
    with channel:
        assert_chunk(roundtrip(stub, serving_checkpoint))
    channel, stub = connect(running.port, ChannelSecurityConfig(token="t"))  # plaintext client
    with channel:
        error = rpc_error(stub.Ready, services_pb2.Empty(), timeout=5)
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@needs_openssl
def test_bad_tls_files_are_reported_as_such(serving_checkpoint, tmp_path, monkeypatch):
    cert, key = make_certificate(tmp_path)
    _, other_key = make_certificate(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    path = f"--policy.path={serving_checkpoint}"
    cases = [
        ((f"--tls_cert={garbage}", f"--tls_key={key}"), "Bad TLS certificate or key"),
        ((f"--tls_cert={cert}", f"--tls_key={other_key}"), "KEY_VALUES_MISMATCH"),
        ((f"--tls_cert={cert}", f"--tls_key={tmp_path / 'missing.pem'}"), "Cannot read the TLS key"),
        ((f"--tls_cert={cert}", f"--tls_key={key}", f"--tls_ca={garbage}"), "Bad TLS CA bundle"),
        ((f"--tls_cert={cert}",), "pass both --tls_cert and --tls_key"),
    ]
    for args, says in cases:
        message = run_server_cli(monkeypatch, path, *args)
        assert says in message and "Cannot bind" not in message, (args, message)

    # The client's command line says the same of its own files, before touching the robot.
    from lerobot_aim.serving.robot_client import main

    argv = [
        "lerobot-aim-robot-client",
        "--robot.type=aim_sim",
        "--policy_type=aim",
        f"--pretrained_name_or_path={serving_checkpoint}",
        "--actions_per_chunk=6",
        f"--tls_ca={garbage}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert "Bad TLS CA bundle" in str(exit_info.value.code)


def test_missing_checkpoint_is_reported_clearly(tmp_path, monkeypatch):
    (tmp_path / "not_a_checkpoint").mkdir()
    cases = [
        (tmp_path / "run" / "checkpoints" / "last" / "pretrained_model", "No checkpoint at --policy.path="),
        ("outputs/train/run/checkpoints/last/pretrained_model", "No checkpoint at --policy.path="),
        ("./pretrained_model", "No checkpoint at --policy.path="),
        (tmp_path / "not_a_checkpoint", "folder without config.json"),
    ]
    for path, says in cases:
        message = run_server_cli(monkeypatch, f"--policy.path={path}")
        assert says in message and "Repo id" not in message, message


def test_message_sizes_are_capped(extra_policy_server, serving_checkpoint):
    from lerobot.transport import services_pb2

    running = extra_policy_server(max_payload_mb=0.005, max_message_mb=1.0)
    channel, stub = connect(running.port)
    with channel:
        stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        send_instructions(stub, instructions(serving_checkpoint))
        error = rpc_error(send_observation, stub, observation())  # ~9 KB of image
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        huge = services_pb2.PolicySetup(data=b"\0" * (2 * 1024 * 1024))
        error = rpc_error(stub.SendPolicyInstructions, huge, timeout=CALL_TIMEOUT)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_non_loopback_bind_needs_allow_remote(serving_checkpoint, policy_server, caplog):
    from lerobot_aim.serving.configs import ServingConfigError, is_loopback_host
    from lerobot_aim.serving.policy_server import start_server

    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost") and is_loopback_host("::1")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("robot-pc.lan")
    with pytest.raises(ServingConfigError, match="--policy.path"):
        start_server(server_config(""))
    for host in ("0.0.0.0", "::", "192.168.1.10", "robot-pc.lan"):
        with pytest.raises(ServingConfigError, match="--allow_remote=true"):
            start_server(server_config(serving_checkpoint, host=host))
    with caplog.at_level(logging.WARNING):
        running = start_server(
            server_config(serving_checkpoint, host="0.0.0.0", allow_remote=True),
            policy_server.servicer.served,
        )
        running.stop()
    assert any("WITHOUT ENCRYPTION" in r.getMessage() for r in caplog.records)


def test_cli_refuses_a_non_loopback_bind(serving_checkpoint, monkeypatch):
    message = run_server_cli(monkeypatch, f"--policy.path={serving_checkpoint}", "--host=0.0.0.0")
    assert "Refusing to bind to '0.0.0.0'" in message and "--allow_remote=true" in message


def test_cli_help(monkeypatch, capsys):
    from lerobot_aim.serving import robot_client

    assert run_server_cli(monkeypatch, "--help") == "0"
    server_help = capsys.readouterr().out
    server_options = [
        "--policy.path",
        "--policy.allowed_paths",
        "--allow_remote",
        "--tls_cert",
        "--tls_ca",
        "--token",
        "--stream_timeout_s",
    ]
    for option in server_options:
        assert option in server_help, option
    monkeypatch.setattr(sys, "argv", ["lerobot-aim-robot-client", "--robot.type=aim_sim", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        robot_client.main()
    assert exit_info.value.code == 0
    client_help = capsys.readouterr().out
    for option in (
        "--server_address",
        "--tls_ca",
        "--tls_cert",
        "--tls_server_name",
        "--token",
        "--robot.joints",
    ):
        assert option in client_help, option
