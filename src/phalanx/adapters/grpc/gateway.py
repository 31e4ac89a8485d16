"""The TLS front of the coordinator: terminates mutual TLS so that refused handshakes are audited.

gRPC's own TLS (``require_client_auth=True``) refuses a client without a certificate, with one
from another CA or an expired one inside the handshake, where no Python code runs: the refusal is
only a line on stderr from gRPC core, without the peer's address. The gateway performs the same
handshake with Python's :mod:`ssl` (OpenSSL, ``CERT_REQUIRED``, the federation CA, ALPN ``h2``),
so every refusal reaches the ``audit`` callable with the peer address and OpenSSL's reason.

A connection that passes is relayed byte for byte to the gRPC server, which listens on loopback
only and itself requires mutual TLS with a per-process CA whose key never leaves memory: only the
gateway can reach it. The gateway records which loopback port carries which verified client, and
the handlers look the client certificate up by ``context.peer()`` (see ``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("phalanx.grpc.gateway")

Audit = Callable[..., None]
INTERNAL_HOST = "phalanx-internal"
GATEWAY_NAME = "phalanx-gateway"
_BUF = 256 * 1024


@dataclass(frozen=True)
class VerifiedPeer:
    """A client that completed the mutual-TLS handshake at the gateway."""

    cert_pem: bytes
    address: str


@dataclass(frozen=True)
class InternalPki:
    """Throwaway CA and the two certificates of the loopback hop (PEM)."""

    ca: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes


def make_internal_pki() -> InternalPki:
    """A fresh in-memory CA with one server (loopback) and one client (gateway) certificate."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phalanx-internal-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, san: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    server = leaf(
        INTERNAL_HOST,
        [x509.DNSName(INTERNAL_HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = leaf(GATEWAY_NAME, [])
    return InternalPki(ca.public_bytes(serialization.Encoding.PEM), *server, *client)


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` from memory (the ssl module reads files only): a private temp dir."""
    with tempfile.TemporaryDirectory(prefix="phalanx-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_path.write_bytes(cert)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        ctx.load_cert_chain(cert_path, key_path)


def server_context(cert: bytes, key: bytes, ca: bytes) -> ssl.SSLContext:
    """The public side: TLS 1.2+, client certificate required and verified against ``ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca.decode())
    _load_chain(ctx, cert, key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def upstream_context(pki: InternalPki) -> ssl.SSLContext:
    """The loopback side: the gateway as a client of the internal gRPC server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=pki.ca.decode())
    _load_chain(ctx, pki.client_cert, pki.client_key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return f"connection closed during the TLS handshake: {exc!r}"


class TlsGateway:
    """Terminates mutual TLS on ``address`` and relays verified connections to ``upstream``.

    Parameters
    ----------
    host, port:
        Where to listen (port 0: any free port; see :attr:`port` after :meth:`start`).
    public:
        The server context of :func:`server_context`.
    upstream:
        The loopback gRPC server's ``(host, port)`` and the context to reach it.
    audit:
        ``audit(event, actor, **detail)``; called with ``tls.handshake_refused`` for every refusal.
    handshake_timeout_s:
        A client that does not finish the handshake in time is dropped (and audited).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        public: ssl.SSLContext,
        upstream: tuple[str, int],
        upstream_ctx: ssl.SSLContext,
        audit: Audit,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        self._host, self._port = host, port
        self._public = public
        self._upstream = upstream
        self._upstream_ctx = upstream_ctx
        self._audit = audit
        self._timeout = handshake_timeout_s
        self._peers: dict[str, VerifiedPeer] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self.port = 0

    def lookup(self, grpc_peer: str) -> VerifiedPeer | None:
        """The verified client behind a loopback connection, by the handler's ``context.peer()``."""
        key = grpc_peer.removeprefix("ipv4:")
        with self._lock:
            return self._peers.get(key)

    def start(self) -> int:
        """Listen and serve in a background thread; returns the bound port."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            loop.create_server(lambda: _Accept(self), self._host, self._port)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._thread = threading.Thread(target=loop.run_forever, name="phalanx-tls", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Close the listener and every relayed connection, then the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()  # no TLS close_notify round trip: stop now
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _serve(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        peer = raw.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        reader = asyncio.StreamReader(limit=_BUF)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            tls = await loop.start_tls(
                raw, protocol, self._public, server_side=True, ssl_handshake_timeout=self._timeout
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            reason = _reason(exc)
            log.warning("refused TLS handshake from %s: %s", address, reason)
            self._audit("tls.handshake_refused", address, reason=reason)
            raw.abort()
            return
        if tls is None:  # the peer hung up right after the handshake
            raw.abort()
            return
        protocol.connection_made(tls)
        writer = asyncio.StreamWriter(tls, protocol, reader, loop)
        self._writers.add(writer)
        try:
            der = tls.get_extra_info("ssl_object").getpeercert(binary_form=True)
            pem = ssl.DER_cert_to_PEM_cert(der).encode()
            await self._relay(reader, writer, VerifiedPeer(pem, address))
        finally:
            self._writers.discard(writer)
            tls.abort()

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: VerifiedPeer
    ) -> None:
        host, port = self._upstream
        try:
            up_reader, up_writer = await asyncio.open_connection(
                host, port, ssl=self._upstream_ctx, server_hostname=INTERNAL_HOST, limit=_BUF
            )
        except (OSError, ssl.SSLError) as exc:
            log.error("gateway cannot reach the gRPC server at %s:%d: %s", host, port, exc)
            return
        local = up_writer.get_extra_info("sockname")
        key = f"{local[0]}:{local[1]}"
        with self._lock:
            self._peers[key] = peer  # registered before the first byte of the client is relayed
        self._writers.add(up_writer)
        try:
            pumps = [
                asyncio.ensure_future(_pump(reader, up_writer)),
                asyncio.ensure_future(_pump(up_reader, writer)),
            ]
            _done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            with self._lock:
                self._peers.pop(key, None)  # unregistered while the port is still ours
            self._writers.discard(up_writer)
            up_writer.transport.abort()


class _Accept(asyncio.Protocol):
    """Accepts a TCP connection without reading from it: the TLS layer takes over first."""

    def __init__(self, gateway: TlsGateway) -> None:
        self._gateway = gateway

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello must reach the TLS layer, not a buffer
        task = asyncio.ensure_future(self._gateway._serve(transport))
        self._gateway._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._gateway._tasks.discard)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
        while data := await src.read(_BUF):
            dst.write(data)
            await dst.drain()
