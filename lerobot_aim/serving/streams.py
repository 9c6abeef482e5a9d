"""Receiving LeRobot's chunked observation streams (TRANSFER_BEGIN, MIDDLE..., END) within bounds.

gRPC's synchronous server holds one worker thread for as long as a client keeps a stream open, so a
few half-open streams would leave no worker for anyone else. :class:`ObservationStreams` bounds each
stream's size and the time it may stay incomplete (RESOURCE_EXHAUSTED beyond either), and receives
on at most ``max_streams`` workers at a time: a stream beyond that is answered UNAVAILABLE at once
(LeRobot's channels retry it), and the server's other workers stay free for ``GetActions`` and for
other clients' handshakes.
"""

import queue
import threading

import grpc
from lerobot.transport import services_pb2  # type: ignore

TransferState = services_pb2.TransferState  # type: ignore[attr-defined]


class StreamRefused(Exception):
    """An observation stream ended without a whole observation; ``code`` is the status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class ObservationStreams:
    def __init__(self, max_streams: int, max_bytes: int, timeout_s: float):
        self.max_streams = max_streams
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_streams)

    def receive(self, request_iterator) -> bytes:
        """The reassembled payload of one stream. Raises :class:`StreamRefused`, or ``grpc.RpcError``
        when the client went away mid-stream."""
        if not self._slots.acquire(blocking=False):
            raise StreamRefused(
                grpc.StatusCode.UNAVAILABLE,
                f"{self.max_streams} observations are arriving already (the most this server receives at "
                "once); send it again",
            )
        try:
            # The request iterator blocks until the client sends; a reader thread lets this worker
            # give up after `timeout_s` (the call then ends, and with it the reader's wait).
            outcome: queue.SimpleQueue = queue.SimpleQueue()
            reader = threading.Thread(
                target=self._read,
                args=(request_iterator, outcome),
                name="aim-observation-reader",
                daemon=True,
            )
            reader.start()
            try:
                result = outcome.get(timeout=self.timeout_s)
            except queue.Empty:
                raise StreamRefused(  # not DEADLINE_EXCEEDED, which LeRobot's channels retry
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the observation was still incomplete after {self.timeout_s:g} s (--stream_timeout_s)",
                ) from None
            if isinstance(result, BaseException):
                raise result
            return result
        finally:
            self._slots.release()

    def _read(self, request_iterator, outcome: queue.SimpleQueue) -> None:
        try:
            outcome.put(self._reassemble(request_iterator))
        except BaseException as e:  # handed to the waiting worker
            outcome.put(e)

    def _reassemble(self, request_iterator) -> bytes:
        buffer = bytearray()
        for item in request_iterator:
            state = item.transfer_state
            if state == TransferState.TRANSFER_BEGIN:
                buffer = bytearray(item.data)
            elif state in (TransferState.TRANSFER_MIDDLE, TransferState.TRANSFER_END):
                buffer += item.data
            else:
                raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, f"unknown transfer state {state}")
            if len(buffer) > self.max_bytes:
                raise StreamRefused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"observation larger than {self.max_bytes} bytes"
                )
            if state == TransferState.TRANSFER_END:
                return bytes(buffer)
        raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, "the stream ended before TRANSFER_END")
