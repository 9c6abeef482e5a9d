"""Configs of ``lerobot-aim-policy-server`` and ``lerobot-aim-robot-client`` (LeRobot's
``PolicyServerConfig`` and ``RobotClientConfig`` plus what it takes to expose a policy safely).

Both ends share :class:`ChannelSecurityConfig`: the token and the TLS files, named alike on both
sides (this end's certificate and key, the CA that signed the other end's certificate).
"""

import ipaddress
import os
from dataclasses import dataclass, field

from lerobot.async_inference.configs import PolicyServerConfig, RobotClientConfig
from lerobot.async_inference.constants import (
    DEFAULT_FPS,
    DEFAULT_INFERENCE_LATENCY,
    DEFAULT_OBS_QUEUE_TIMEOUT,
)

TOKEN_ENV = "LEROBOT_AIM_SERVER_TOKEN"


class ServingConfigError(ValueError):
    """The server or client configuration is unsafe or incomplete; the message says what to pass."""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names only this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname or 0.0.0.0-like wildcard: may be reachable from outside


@dataclass(kw_only=True)
class ChannelSecurityConfig:
    """Token and TLS of one end of the channel (the fields come after the config's own on the CLI)."""

    # Shared token every call carries as "authorization: Bearer <token>" metadata (the server refuses
    # calls without it). Prefer the environment variable named by --token_env (a command-line token
    # is visible to other users).
    token: str | None = None
    # Environment variable read for the token when --token is not given.
    token_env: str = TOKEN_ENV
    # PEM certificate chain of this end, with --tls_key: the server's (serve over TLS), or the
    # client's for a server that requires client certificates.
    tls_cert: str | None = None
    # PEM private key of --tls_cert.
    tls_key: str | None = None
    # PEM CA bundle that signed the other end's certificate: on the server, clients must then present
    # a certificate it signed (mutual TLS); on the client, it verifies the server (default: the
    # system's roots; the server's self-signed certificate itself works too).
    tls_ca: str | None = None

    def resolved_token(self) -> str | None:
        """The token from --token, else from the --token_env variable; None when neither is set."""
        token = self.token if self.token is not None else os.environ.get(self.token_env)
        return token or None

    def validate_tls(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ServingConfigError("A TLS certificate needs its key: pass both --tls_cert and --tls_key.")


@dataclass
class ServedPolicyConfig:
    # Checkpoint the server loads at start-up and serves (a `pretrained_model` folder, or a Hub id).
    # Clients cannot choose another one: their `pretrained_name_or_path` must name this one (or one of
    # `allowed_paths`), else they are refused.
    path: str | None = None
    # Further checkpoints a client may select by path, all loaded at start-up, e.g. '[a, b]'.
    allowed_paths: list[str] = field(default_factory=list)
    # Device the policies run on ("cpu", "cuda", "cuda:1", "mps"). None: the checkpoint's own
    # `device` setting. The device a client asks for is ignored.
    device: str | None = None


@dataclass
class AIMPolicyServerConfig(PolicyServerConfig, ChannelSecurityConfig):
    """LeRobot's PolicyServerConfig plus what it takes to expose a policy safely."""

    # Address to bind. Loopback by default; any other address needs --allow_remote=true.
    host: str = "127.0.0.1"
    # Port to bind (0: any free port, printed at start-up).
    port: int = 8080
    # Control frequency of the robot, in Hz: action i of a chunk is timed i / fps after its observation.
    fps: int = DEFAULT_FPS
    # Least time a GetActions call takes, in seconds (LeRobot's pacing of inference).
    inference_latency: float = DEFAULT_INFERENCE_LATENCY
    # How long a GetActions call waits for an observation before answering empty, in seconds.
    obs_queue_timeout: float = DEFAULT_OBS_QUEUE_TIMEOUT
    # The policy checkpoint(s) this server serves.
    policy: ServedPolicyConfig = field(default_factory=ServedPolicyConfig)
    # Allow binding to a non-loopback address. Without TLS the channel is unencrypted (observations,
    # actions and the token travel in clear text).
    allow_remote: bool = False
    # Largest gRPC message accepted or sent, in MiB (LeRobot's client sends 2 MiB chunks, 4 MiB max).
    max_message_mb: float = 4.0
    # Largest observation reassembled from chunks, in MiB.
    max_payload_mb: float = 64.0
    # Longest time an observation may take to arrive whole, in seconds; a stream still incomplete
    # then is ended (RESOURCE_EXHAUSTED), so that stalled clients cannot hold the server's workers.
    stream_timeout_s: float = 5.0
    # Worker threads of the gRPC server. Observations are received on at most max_workers - 2 of them
    # at a time, so that GetActions and the handshake of other clients always find one.
    max_workers: int = 4

    def __post_init__(self):
        # LeRobot's checks, except that port 0 (any free port) is allowed.
        if not 0 <= self.port <= 65535:
            raise ValueError(f"Port must be between 0 and 65535, got {self.port}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.inference_latency < 0:
            raise ValueError(f"inference_latency must be non-negative, got {self.inference_latency}")
        if self.obs_queue_timeout < 0:
            raise ValueError(f"obs_queue_timeout must be non-negative, got {self.obs_queue_timeout}")
        if self.max_workers < 3:
            raise ValueError(
                "max_workers must be at least 3 (one for GetActions, one for other calls, one for "
                f"observations), got {self.max_workers}"
            )

    @property
    def max_observation_streams(self) -> int:
        return self.max_workers - 2

    def validate(self) -> None:
        """Refuse unsafe or incomplete settings with a message that says what to pass."""
        if not self.policy.path:
            raise ServingConfigError(
                "No checkpoint: pass --policy.path=<pretrained_model folder or Hub id>. The server loads it "
                "at start-up; clients cannot choose what it loads."
            )
        if not is_loopback_host(self.host) and not self.allow_remote:
            raise ServingConfigError(
                f"Refusing to bind to {self.host!r}: it is not a loopback address, so anyone on the network "
                "could reach the policy (and the robot it drives). Pass --allow_remote=true to do it anyway, "
                "ideally with --tls_cert/--tls_key and a token (--token or $" + self.token_env + "), or bind "
                "to 127.0.0.1 and tunnel (e.g. ssh -L)."
            )
        self.validate_tls()
        if self.tls_ca and not self.tls_cert:
            raise ServingConfigError("--tls_ca (client certificates) needs --tls_cert and --tls_key.")
        if self.max_message_mb <= 0 or self.max_payload_mb <= 0 or self.stream_timeout_s <= 0:
            raise ServingConfigError(
                "--max_message_mb, --max_payload_mb and --stream_timeout_s must be positive."
            )


@dataclass
class AIMRobotClientConfig(RobotClientConfig, ChannelSecurityConfig):
    """LeRobot's RobotClientConfig plus the token and TLS of the channel."""

    # Connect over TLS (implied by --tls_ca or --tls_cert).
    tls: bool = False
    # Name the server's certificate must carry, when it differs from the host in --server_address.
    tls_server_name: str | None = None
    # Decode action chunks with the allow-list unpickler (lists of TimedAction tensors only).
    safe_actions: bool = True

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca) or bool(self.tls_cert)
