"""The gRPC channel between robot client and policy server: TLS credentials and the shared token,
for both ends (fields in :class:`~lerobot_aim.serving.configs.ChannelSecurityConfig`).

TLS files are read and checked with Python's ``ssl`` before gRPC sees them, so that a bad certificate
is reported as such (gRPC only says that it cannot bind the port, or that the channel failed).
"""

import hmac
import logging
import ssl
from collections import namedtuple
from pathlib import Path

import grpc
from lerobot.transport.utils import grpc_channel_options

from lerobot_aim.serving.configs import ChannelSecurityConfig, ServingConfigError

# The call metadata that carries the token: "authorization: Bearer <token>".
TOKEN_METADATA_KEY = "authorization"


def bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


# ----------------------------------------------------------------------------------------------
# TLS


def _refuse_encrypted_key() -> bytes:
    return b""  # never prompt on the terminal: an encrypted key fails to load instead


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ServingConfigError(f"Cannot read the TLS {what} {path!r}: {e.strerror or e}") from None


def check_tls_files(security: ChannelSecurityConfig) -> None:
    """Load the certificate, its key and the CA bundle as an SSL context would; a file that is not
    what it should be raises :class:`ServingConfigError` naming it and saying what is wrong."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if security.tls_cert:
        _read_pem(security.tls_cert, "certificate")
        _read_pem(security.tls_key, "key")
        try:
            context.load_cert_chain(security.tls_cert, security.tls_key, password=_refuse_encrypted_key)
        except ssl.SSLError as e:
            raise ServingConfigError(
                f"Bad TLS certificate or key (--tls_cert={security.tls_cert}, --tls_key={security.tls_key}): "
                f"{e.reason or e}. Pass a PEM certificate chain and the unencrypted PEM private key it was "
                "made with (e.g. `openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem`)."
            ) from None
    if security.tls_ca:
        _read_pem(security.tls_ca, "CA bundle")
        try:
            context.load_verify_locations(cafile=str(Path(security.tls_ca).expanduser()))
        except ssl.SSLError as e:
            raise ServingConfigError(
                f"Bad TLS CA bundle (--tls_ca={security.tls_ca}): {e.reason or e}. Pass PEM certificates."
            ) from None


def server_credentials(security: ChannelSecurityConfig) -> grpc.ServerCredentials:
    """TLS credentials of the server (its certificate; client certificates required with ``tls_ca``)."""
    check_tls_files(security)
    return grpc.ssl_server_credentials(
        [(_read_pem(security.tls_key, "key"), _read_pem(security.tls_cert, "certificate"))],
        root_certificates=_read_pem(security.tls_ca, "CA bundle") if security.tls_ca else None,
        require_client_auth=bool(security.tls_ca),
    )


def channel_credentials(security: ChannelSecurityConfig) -> grpc.ChannelCredentials:
    """TLS credentials of the client (the CA that verifies the server; its own certificate, if any)."""
    check_tls_files(security)
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(security.tls_ca, "CA bundle") if security.tls_ca else None,
        private_key=_read_pem(security.tls_key, "key") if security.tls_cert else None,
        certificate_chain=_read_pem(security.tls_cert, "certificate") if security.tls_cert else None,
    )


# ----------------------------------------------------------------------------------------------
# The token


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) every call without ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str, logger: logging.Logger):
        self._expected = f"Bearer {token}".encode()
        self._logger = logger

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get(TOKEN_METADATA_KEY, "")
        given = given.encode() if isinstance(given, str) else bytes(given)
        handler = continuation(handler_call_details)
        if handler is None or hmac.compare_digest(given, self._expected):
            return handler
        reason = "no token" if not given else "wrong token"
        method, logger = handler_call_details.method, self._logger

        def deny(_request, context):
            logger.error(f"Refused {method} from {context.peer()}: {reason}")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{reason}: pass the server's token")

        if handler.request_streaming and not handler.response_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if not handler.request_streaming and not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        return grpc.unary_stream_rpc_method_handler(deny)


class _CallDetails(
    namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class TokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str):
        self._entry = (TOKEN_METADATA_KEY, f"Bearer {token}")

    def _details(self, d):
        metadata = [*(d.metadata or ()), self._entry]
        return _CallDetails(
            method=d.method,
            timeout=d.timeout,
            metadata=metadata,
            credentials=d.credentials,
            wait_for_ready=getattr(d, "wait_for_ready", None),
            compression=getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def make_channel(
    address: str,
    security: ChannelSecurityConfig | None = None,
    *,
    tls: bool = False,
    tls_server_name: str | None = None,
    options: list | None = None,
) -> grpc.Channel:
    """A channel to a ``lerobot-aim-policy-server``: TLS when ``tls`` or a TLS file is given, the
    token (``security.resolved_token()``) on every call."""
    security = security or ChannelSecurityConfig()
    security.validate_tls()
    options = list(options or grpc_channel_options())
    if tls or security.tls_ca or security.tls_cert:
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        channel = grpc.secure_channel(address, channel_credentials(security), options)
    else:
        channel = grpc.insecure_channel(address, options)
    if token := security.resolved_token():
        channel = grpc.intercept_channel(channel, TokenClientInterceptor(token))
    return channel
