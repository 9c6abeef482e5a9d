"""``lerobot-aim-policy-server``: LeRobot's async policy server, safe to run next to a robot.

It speaks LeRobot 0.6.1's ``transport.AsyncInference`` gRPC protocol unchanged, so LeRobot's own
``python -m lerobot.async_inference.robot_client`` drives it, and ``lerobot-aim-robot-client`` (token,
TLS, and every control step's observation, which AIM's history needs; see
:mod:`lerobot_aim.serving.episode`). It reuses LeRobot's ``PolicyServer`` (queueing, timing, action
chunks) and changes what is unsafe there (:mod:`lerobot_aim.serving.servicer`):

- every client message is decoded by an allow-list unpickler (:mod:`lerobot_aim.serving.safe_pickle`)
  and checked; anything else is refused with ``INVALID_ARGUMENT``, logged with the client's address,
  and nothing of it runs; so are observations whose images or values do not match the robot's
  announced features;
- the checkpoint is chosen by whoever starts the server (``--policy.path``, plus optional
  ``--policy.allowed_paths``) and loaded at start-up; a client asking for another path or policy type
  is refused with ``PERMISSION_DENIED``;
- a chunk with a non-finite action is never sent: the client gets ``INTERNAL`` with the reason;
- it binds to 127.0.0.1 unless ``--allow_remote=true``; TLS (``--tls_cert``/``--tls_key``, client
  certificates with ``--tls_ca``) and a shared token (``--token`` or the ``LEROBOT_AIM_SERVER_TOKEN``
  variable, checked on every call) are optional;
- gRPC messages are capped (``--max_message_mb``), so are a reassembled observation
  (``--max_payload_mb``) and the time it may take to arrive (``--stream_timeout_s``); observations are
  received on at most ``--max_workers`` - 2 workers, so stalled clients leave the others served.

Example::

    lerobot-aim-policy-server --policy.path=outputs/train/aim/checkpoints/last/pretrained_model \\
        --port=8080 --fps=30
"""

import logging
import sys
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from lerobot.configs import parser
from lerobot.transport import services_pb2_grpc  # type: ignore

import lerobot_aim  # noqa: F401  (registers --policy.type=aim)
from lerobot_aim.serving.channel import TokenAuthInterceptor, bind_address, server_credentials
from lerobot_aim.serving.checkpoints import ServedPolicy, load_served_policy
from lerobot_aim.serving.configs import AIMPolicyServerConfig, ServingConfigError, is_loopback_host
from lerobot_aim.serving.servicer import MIB, AIMPolicyServer


@dataclass
class RunningServer:
    """A started server: ``port`` is the bound port; ``stop()`` shuts it down and joins its threads."""

    server: grpc.Server
    servicer: AIMPolicyServer
    executor: futures.ThreadPoolExecutor
    host: str
    port: int
    tls: bool

    @property
    def address(self) -> str:
        return bind_address(self.host, self.port)

    def stop(self, grace: float | None = 1.0) -> None:
        self.servicer.stop()
        self.server.stop(grace).wait()
        # Joins the workers; a GetActions waiting for an observation returns within obs_queue_timeout.
        self.executor.shutdown(wait=True, cancel_futures=True)

    def wait(self) -> None:
        self.server.wait_for_termination()


def _load_policies(cfg: AIMPolicyServerConfig, logger: logging.Logger) -> list[ServedPolicy]:
    policies = []
    for path in dict.fromkeys([cfg.policy.path, *cfg.policy.allowed_paths]):
        start = time.perf_counter()
        policies.append(load_served_policy(path, cfg.policy.device))
        logger.info(
            f"Loaded {path} ({policies[-1].policy_type}) on {policies[-1].device} "
            f"in {time.perf_counter() - start:.1f}s"
        )
    return policies


def start_server(cfg: AIMPolicyServerConfig, policies: list[ServedPolicy] | None = None) -> RunningServer:
    """Validate ``cfg``, load the checkpoints (unless given) and start serving; returns at once."""
    cfg.validate()
    logger = AIMPolicyServer.logger
    tls = bool(cfg.tls_cert)
    credentials = server_credentials(cfg) if tls else None  # bad TLS files fail here, said as such
    servicer = AIMPolicyServer(cfg, policies if policies is not None else _load_policies(cfg, logger))

    token = cfg.resolved_token()
    interceptors = [TokenAuthInterceptor(token, logger)] if token else []
    max_message = int(cfg.max_message_mb * MIB)
    executor = futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="aim-policy-server")
    server = grpc.server(
        executor,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            ("grpc.so_reuseport", 0),  # fail rather than share the port with another process
        ],
        maximum_concurrent_rpcs=4 * cfg.max_workers,
    )
    services_pb2_grpc.add_AsyncInferenceServicer_to_server(servicer, server)
    address = bind_address(cfg.host, cfg.port)
    try:
        port = server.add_secure_port(address, credentials) if tls else server.add_insecure_port(address)
    except RuntimeError as e:
        executor.shutdown(wait=False)
        raise ServingConfigError(f"Cannot bind {address}: {e}") from e
    if not port:
        executor.shutdown(wait=False)
        raise ServingConfigError(f"Cannot bind {address} (in use?)")

    if not is_loopback_host(cfg.host):
        if not tls:
            logger.warning(
                f"WARNING: serving on {cfg.host}:{port} WITHOUT ENCRYPTION: observations, actions"
                + (" and the token" if token else "")
                + " travel in clear text. Configure --tls_cert/--tls_key, or bind 127.0.0.1 and tunnel."
            )
        if not token:
            logger.warning(
                f"WARNING: serving on {cfg.host}:{port} without a token: anyone who reaches the port can "
                f"drive the robot. Set --token or ${cfg.token_env}."
            )
    server.start()
    logger.info(
        f"AIM policy server on {bind_address(cfg.host, port)} ({'TLS' if tls else 'plaintext'}, "
        f"{'token required' if token else 'no token'}) serving {servicer.served_paths}"
    )
    return RunningServer(server, servicer, executor, cfg.host, port, tls)


@parser.wrap()
def serve(cfg: AIMPolicyServerConfig) -> None:
    """Start the server and block until interrupted."""
    running = start_server(cfg)
    try:
        running.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        AIMPolicyServer.logger.info("Server terminated")


def main() -> None:
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    try:
        serve()
    except ServingConfigError as e:
        logging.getLogger("policy_server").error(str(e))
        sys.exit(f"lerobot-aim-policy-server: error: {e}")


if __name__ == "__main__":
    main()
