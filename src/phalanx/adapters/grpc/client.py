"""The participant's (and admin's) gRPC client: outbound only, mutual TLS, errors translated.

Implements :class:`~phalanx.ports.CoordinatorLink` for the agent loop. Every ``grpc.RpcError`` is
translated here into the Phalanx error tree: :class:`~phalanx.ports.LinkUnavailable` (retry
later), :class:`~phalanx.core.errors.TrustError` (identity refused) or
:class:`~phalanx.core.errors.ProtocolError` (message refused).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import grpc

from phalanx.adapters.grpc import codec
from phalanx.core.errors import PhalanxError, ProtocolError, TrustError
from phalanx.core.messages import Reply, Task
from phalanx.ports import LinkUnavailable, Receipt

MiB = 1024 * 1024
_UNREACHABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


def translate(exc: grpc.RpcError, what: str, address: str) -> PhalanxError:
    """A ``grpc.RpcError`` of the call ``what`` as a Phalanx error a person can act on."""
    code: grpc.StatusCode = exc.code()
    details = str(exc.details())
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return TrustError(
            f"the coordinator refused this identity ({what}): {details}",
            hint="check that the certificate is issued by the federation CA and not revoked",
        )
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return TrustError(f"the coordinator does not allow {what} for this identity: {details}")
    if code in _UNREACHABLE:
        return LinkUnavailable(
            f"cannot reach the coordinator at {address} ({what}): {code.name}: {details}",
            hint="it may be down or restarting; a certificate from another CA, expired or"
            " missing is also refused during the TLS handshake and shows up this way",
        )
    return ProtocolError(f"the coordinator refused {what}: {code.name}: {details}")


class CoordinatorClient:
    """A connection to the coordinator.

    Parameters
    ----------
    address:
        ``host:port`` of the coordinator.
    ca_cert, cert, key:
        PEM bytes: the federation CA, this participant's (or admin's) certificate and key.
    server_name:
        Name to verify in the coordinator's certificate when it differs from the address host.
    call_timeout_s:
        Deadline of each call beyond the long-poll wait.
    max_message_bytes, max_payload_bytes, chunk_bytes:
        Per-message limit, reassembled payload cap, and the data chunk size of replies.
    """

    def __init__(
        self,
        address: str,
        *,
        ca_cert: bytes,
        cert: bytes | None,
        key: bytes | None,
        server_name: str | None = None,
        call_timeout_s: float = 60.0,
        max_message_bytes: int = 4 * MiB,
        max_payload_bytes: int = 256 * MiB,
        chunk_bytes: int = codec.CHUNK_BYTES,
    ) -> None:
        self.address = address
        self._timeout = call_timeout_s
        self._max_payload = max_payload_bytes
        self._chunk = chunk_bytes
        self._finished = False
        self._last: codec.Envelope | None = None
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        creds = grpc.ssl_channel_credentials(ca_cert, key, cert)
        self.channel = grpc.secure_channel(address, creds, options=options)
        self._pull = self.channel.unary_stream(codec.PULL_TASK)
        self._push = self.channel.stream_unary(codec.PUSH_REPLY)
        self._status = self.channel.unary_unary(codec.STATUS)
        self._model = self.channel.unary_stream(codec.PULL_MODEL)

    @property
    def finished(self) -> bool:
        """True once the coordinator answered a pull with DONE."""
        return self._finished

    def pull_task(self, wait_s: float = 20.0) -> Task | None:
        """Long-poll for the next task; ``None`` when none came in ``wait_s`` or on DONE."""
        wait_ms = int(wait_s * 1000)
        try:
            call = self._pull(codec.encode_pull_request(wait_ms), timeout=wait_s + self._timeout)
            stream: Iterator[bytes] = iter(call)
            first = next(stream, None)
            if first is None:
                raise ProtocolError("the coordinator closed the task stream without an envelope")
            env = codec.decode_envelope(first)
            if env.kind is codec.Kind.DONE:
                self._finished = True
                return None
            if env.kind is codec.Kind.IDLE:
                return None
            if env.kind is not codec.Kind.TASK:
                raise ProtocolError(f"expected a task stream, found {env.kind.name}")
            _, body = codec.read_payload(_prepend(first, stream), max_bytes=self._max_payload)
        except grpc.RpcError as exc:
            raise translate(exc, "PullTask", self.address) from None
        task = codec.decode_task(body)
        if (task.round, task.stage.value, task.schema_hash) != (
            env.round,
            env.stage,
            env.schema_hash,
        ):
            raise ProtocolError("task body does not match its envelope (round, stage, schema)")
        self._last = env
        return task

    def push_reply(self, reply: Reply) -> Receipt:
        """Send ``reply`` for the task pulled last, chunked, with its size and sha256."""
        env = self._last
        if env is None:
            raise ProtocolError("no task was pulled: there is nothing to reply to")
        body = codec.encode_reply(reply)
        chunks = codec.payload_chunks(
            codec.Kind.REPLY,
            body,
            chunk_bytes=self._chunk,
            ticket=env.ticket,
            round=reply.round,
            stage=reply.stage.value,
            schema_hash=reply.schema_hash,
        )
        return self.push_chunks(chunks, body)

    def push_chunks(self, chunks: Iterator[bytes], body: bytes = b"") -> Receipt:
        """Send raw serialized chunks (also used by tests to send malformed streams)."""
        try:
            ack = self._push(chunks, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise translate(exc, "PushReply", self.address) from None
        received, digest = codec.decode_ack(ack)
        if body and (received != len(body) or digest != hashlib.sha256(body).digest()):
            raise ProtocolError("the coordinator acknowledged other bytes than were sent")
        return Receipt(size=received, sha256=digest.hex())

    def status(self) -> dict[str, Any]:
        """The coordinator's status document (admins only)."""
        try:
            blob = self._status(codec.encode_empty(), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise translate(exc, "Status", self.address) from None
        return codec.decode_status(blob)

    def pull_model(self) -> bytes:
        """The current global model bundle."""
        try:
            stream: Iterator[bytes] = iter(self._model(codec.encode_empty(), timeout=self._timeout))
            env, body = codec.read_payload(stream, max_bytes=self._max_payload)
        except grpc.RpcError as exc:
            raise translate(exc, "PullModel", self.address) from None
        if env.kind is not codec.Kind.MODEL:
            raise ProtocolError(f"expected a model stream, found {env.kind.name}")
        return body

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
