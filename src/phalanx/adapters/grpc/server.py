"""The coordinator's gRPC server: mutual TLS, per-call authorization, audited refusals.

Participants connect outbound and long-poll ``PullTask``; they answer with ``PushReply``. Admins
may call ``Status`` and ``PullModel``. Every call is authorized from the verified client
certificate through the injected ``authorize`` (CA, expiry and revocation checked on every call,
so a revocation takes effect without a restart), and every refusal goes to the injected ``audit``.
TLS handshakes are terminated by :class:`~phalanx.adapters.grpc.gateway.TlsGateway` so that a
refused handshake is audited too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, NoReturn

import grpc

from phalanx.adapters.grpc import codec
from phalanx.adapters.grpc.gateway import (
    GATEWAY_NAME,
    TlsGateway,
    make_internal_pki,
    server_context,
    upstream_context,
)
from phalanx.adapters.grpc.mailbox import GrpcTransport, Mailboxes, ReplayedReply, StaleReply
from phalanx.core.errors import ConfigError, PhalanxError, ProtocolError
from phalanx.core.types import ParticipantId

log = logging.getLogger("phalanx.grpc.server")

Authorize = Callable[[bytes], str]
Audit = Callable[..., None]
MiB = 1024 * 1024
_PARTICIPANT, _ADMIN = "participant", "admin"


class _Counted:
    """Iterates request messages, counting their bytes, translating a broken stream."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self.nbytes = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            blob = next(self._it)
        except grpc.RpcError as exc:
            raise ProtocolError(f"the reply stream broke off: {exc}") from None
        self.nbytes += len(blob)
        return blob


class CoordinatorServer:
    """The coordinator endpoint.

    Parameters
    ----------
    address:
        ``host:port`` to listen on (port 0: a free port, see :attr:`port` after :meth:`start`).
    server_cert, server_key, ca_cert:
        PEM bytes: the coordinator's certificate and key, and the federation CA.
    authorize:
        ``authorize(cert_pem) -> name``; raises :class:`~phalanx.core.errors.TrustError` to refuse.
    audit:
        ``audit(event, actor, **detail)``: refusals and accepted replies.
    participants, admins:
        Names allowed to pull tasks / push replies, and names allowed ``Status``.
    max_message_bytes:
        gRPC's per-message limit both ways (a larger message: ``RESOURCE_EXHAUSTED``).
    max_payload_bytes:
        Cap on one reassembled reply.
    status, model:
        Supply the ``Status`` document and the ``PullModel`` bundle bytes (``None``: none yet).
    session_ttl_s, max_wait_s, default_deadline_s:
        Session liveness, longest long-poll, deadline of an exchange called without one.
    """

    def __init__(
        self,
        address: str,
        *,
        server_cert: bytes,
        server_key: bytes,
        ca_cert: bytes,
        authorize: Authorize,
        audit: Audit,
        participants: set[str],
        admins: set[str],
        max_message_bytes: int = 4 * MiB,
        max_payload_bytes: int = 256 * MiB,
        chunk_bytes: int = codec.CHUNK_BYTES,
        status: Callable[[], dict[str, Any]] | None = None,
        model: Callable[[], bytes | None] | None = None,
        session_ttl_s: float = 45.0,
        max_wait_s: float = 30.0,
        default_deadline_s: float = 600.0,
    ) -> None:
        if chunk_bytes + 1024 > max_message_bytes:
            raise ConfigError(
                f"chunk size {chunk_bytes} does not fit max_message_bytes {max_message_bytes}",
                hint="raise max_message_bytes or lower chunk_bytes",
            )
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"listen address must be host:port, found {address!r}")
        self._host, self._want_port = host.strip("[]"), int(port)
        self._tls = (server_cert, server_key, ca_cert)
        self._authorize = authorize
        self._audit = audit
        self._roles: dict[str, set[str]] = {_PARTICIPANT: set(participants), _ADMIN: set(admins)}
        self._max_message = max_message_bytes
        self._max_payload = max_payload_bytes
        self._chunk = chunk_bytes
        self._status = status
        self._model = model
        self._max_wait = max_wait_s
        self.mailboxes = Mailboxes(
            set(participants),
            session_ttl_s=session_ttl_s,
            chunk_bytes=chunk_bytes,
            default_deadline_s=default_deadline_s,
        )
        self._transport = GrpcTransport(self.mailboxes, self.stop)
        self._grpc: grpc.Server | None = None
        self._gateway: TlsGateway | None = None
        self.port = 0

    @property
    def transport(self) -> GrpcTransport:
        """The :class:`~phalanx.ports.Transport` the coordinator service drives."""
        return self._transport

    def start(self) -> int:
        """Start the loopback gRPC server and the TLS gateway; returns the public port."""
        pki = make_internal_pki()
        workers = 8 + 2 * (len(self._roles[_PARTICIPANT]) + len(self._roles[_ADMIN]))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="phalanx-rpc"),
            options=[
                ("grpc.max_receive_message_length", self._max_message),
                ("grpc.max_send_message_length", self._max_message),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers([self._handlers()])
        creds = grpc.ssl_server_credentials(
            [(pki.server_key, pki.server_cert)],
            root_certificates=pki.ca,
            require_client_auth=True,
        )
        internal_port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        self._grpc = server
        cert, key, ca = self._tls
        self._gateway = TlsGateway(
            self._host,
            self._want_port,
            public=server_context(cert, key, ca),
            upstream=("127.0.0.1", internal_port),
            upstream_ctx=upstream_context(pki),
            audit=self._audit,
        )
        self.port = self._gateway.start()
        log.info("coordinator listening on %s:%d (mutual TLS)", self._host, self.port)
        return self.port

    def finish(self) -> None:
        """Tell every agent the federation is finished (their next pull answers DONE)."""
        self.mailboxes.finish()

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop accepting, wake waiting calls, close connections."""
        self.mailboxes.close()
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait(grace_s + 5)
            self._grpc = None

    # -- RPCs -------------------------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            codec.SERVICE,
            {
                "PullTask": grpc.unary_stream_rpc_method_handler(self._pull_task),
                "PushReply": grpc.stream_unary_rpc_method_handler(self._push_reply),
                "Status": grpc.unary_unary_rpc_method_handler(self._status_rpc),
                "PullModel": grpc.unary_stream_rpc_method_handler(self._pull_model),
            },
        )

    def _pull_task(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        pid = ParticipantId(self._identify(context, "PullTask", {_PARTICIPANT}))
        try:
            wait_ms = codec.decode_pull_request(request)
        except ProtocolError as exc:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "request.garbled", pid, exc)
        done, chunks = self.mailboxes.take(
            pid, min(wait_ms / 1000, self._max_wait), context.is_active
        )
        if chunks is None:
            kind = codec.Kind.DONE if done else codec.Kind.IDLE
            yield codec.envelope_chunk(codec.Envelope(kind))
            return
        for blob in chunks:
            yield blob
            self.mailboxes.count_down(len(blob))

    def _push_reply(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        pid = ParticipantId(self._identify(context, "PushReply", {_PARTICIPANT}))
        stream = _Counted(requests)
        code = grpc.StatusCode.INVALID_ARGUMENT
        event = "reply.garbled"
        try:
            env, body = codec.read_payload(
                stream,
                max_bytes=self._max_payload,
                check=lambda e: self.mailboxes.check_reply(pid, e),
            )
            if env.kind is not codec.Kind.REPLY:
                raise ProtocolError(f"expected a reply stream, found {env.kind.name}")
            reply = codec.decode_reply(body)
            echoed = (reply.participant, reply.round, reply.stage.value, reply.schema_hash)
            if echoed != (pid, env.round, env.stage, env.schema_hash):
                raise ProtocolError(
                    f"reply body {echoed} does not match its sender and envelope"
                    f" {(pid, env.round, env.stage, env.schema_hash)}"
                )
            self.mailboxes.deliver(pid, env, reply, stream.nbytes)
        except StaleReply as exc:
            code, event = grpc.StatusCode.FAILED_PRECONDITION, "reply.stale"
            self._refuse(context, code, event, pid, exc)
        except ReplayedReply as exc:
            code, event = grpc.StatusCode.ALREADY_EXISTS, "reply.replayed"
            self._refuse(context, code, event, pid, exc)
        except codec.PayloadTooLarge as exc:
            code, event = grpc.StatusCode.RESOURCE_EXHAUSTED, "reply.oversized"
            self._refuse(context, code, event, pid, exc)
        except ProtocolError as exc:
            self._refuse(context, code, event, pid, exc)
        self._audit(
            "reply.accepted",
            pid,
            round=env.round,
            stage=env.stage,
            bytes=len(body),
            ticket=env.ticket,
        )
        return codec.encode_ack(len(body), hashlib.sha256(body).digest())

    def _status_rpc(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        who = self._identify(context, "Status", {_ADMIN})
        doc: dict[str, Any] = {
            "connected": [str(p) for p in self.mailboxes.available()],
            "enrolled": sorted(self._roles[_PARTICIPANT]),
            "finished": self.mailboxes.done,
            "bytes_down": self.mailboxes.bytes_down,
            "bytes_up": self.mailboxes.bytes_up,
        }
        if self._status is not None:
            doc.update(self._status())
        log.info("status requested by %s", who)
        return codec.encode_status(doc)

    def _pull_model(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        who = self._identify(context, "PullModel", {_PARTICIPANT, _ADMIN})
        bundle = self._model() if self._model is not None else None
        if bundle is None:
            self._refuse(
                context, grpc.StatusCode.NOT_FOUND, "model.missing", who, "no model bundle yet"
            )
        self._audit("model.pulled", who, bytes=len(bundle))
        yield from codec.payload_chunks(codec.Kind.MODEL, bundle, chunk_bytes=self._chunk)

    # -- authentication ---------------------------------------------------------------------

    def _identify(self, context: grpc.ServicerContext, method: str, roles: set[str]) -> str:
        """The caller's name, from the certificate the gateway verified; aborts otherwise."""
        gateway = self._gateway
        peer = gateway.lookup(context.peer()) if gateway is not None else None
        relayed = context.auth_context().get("x509_common_name") == [GATEWAY_NAME.encode()]
        if peer is None or not relayed:
            self._refuse(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "auth.refused",
                context.peer(),
                "connection did not come through the TLS gateway",
                method=method,
            )
        try:
            name = self._authorize(peer.cert_pem)
        except PhalanxError as exc:
            self._refuse(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "auth.refused",
                peer.address,
                f"the coordinator refused this identity: {exc}",
                method=method,
            )
        if not any(name in self._roles[r] for r in roles):
            self._refuse(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "auth.denied",
                name,
                f"{name!r} may not call {method} (needs role {' or '.join(sorted(roles))})",
                method=method,
                address=peer.address,
            )
        return name

    def _refuse(
        self,
        context: grpc.ServicerContext,
        code: grpc.StatusCode,
        event: str,
        actor: str,
        why: object,
        **detail: Any,
    ) -> NoReturn:
        reason = str(why)
        log.warning("%s %s: %s", event, actor, reason)
        self._audit(event, actor, reason=reason, code=code.name, **detail)
        context.abort(code, reason)
        raise RuntimeError("grpc context.abort returned")  # it raises; this satisfies NoReturn
