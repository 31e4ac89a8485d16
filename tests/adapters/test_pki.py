"""The federation PKI: real keys, real certificates, a real TLS handshake."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from phalanx.adapters.pki import (
    Identity,
    TrustRoot,
    identity_from_pem,
    init_ca,
    issue,
    load_identity,
    revoke,
)
from phalanx.core.errors import ConfigError, TrustError


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_ca(tmp_path_factory.mktemp("pki") / "ca", "north-isac")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_key_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    d = init_ca(tmp_path / "ca", "fed")
    assert _mode(d / "ca.key") == 0o600
    for name in ("ca.crt", "crl.pem", "federation.json", "issued.json", "revoked.json"):
        assert (d / name).is_file()
    with pytest.raises(ConfigError, match="already exists"):
        init_ca(d, "fed")


def test_init_rejects_bad_federation_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="federation name"):
        init_ca(tmp_path / "ca", "bad/name")


def test_issued_identity_verifies_and_round_trips(ca_dir: Path) -> None:
    files = issue(ca_dir, "participant", "hospital-a")
    assert files.directory == ca_dir / "participants" / "hospital-a"
    assert _mode(files.key) == 0o600
    assert files.ca.read_bytes() == (ca_dir / "ca.crt").read_bytes()
    ident = TrustRoot.from_ca_dir(ca_dir).verify(files.cert.read_bytes())
    assert ident == identity_from_pem(files.cert.read_bytes()) == files.identity
    assert (ident.role, ident.name, ident.federation) == ("participant", "hospital-a", "north-isac")
    assert ident.uri == "phalanx://north-isac/participant/hospital-a"
    assert ident.serial.bit_length() > 64
    assert load_identity(files.directory) == files
    root = TrustRoot.from_identity(files.directory, ca_dir / "crl.pem")
    assert root.verify(files.cert.read_bytes()).name == "hospital-a"


@pytest.mark.parametrize("name", ["", "a" * 65, "bad name", "../x", "..", "é", "x/y"])
def test_name_validation(ca_dir: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid name"):
        issue(ca_dir, "participant", name)


def test_existing_identity_is_not_overwritten(ca_dir: Path) -> None:
    issue(ca_dir, "admin", "soc-lead")
    with pytest.raises(ConfigError, match="already holds an identity"):
        issue(ca_dir, "admin", "soc-lead")


def test_certificate_of_another_ca_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    other = init_ca(tmp_path / "other", "north-isac")  # same name, different key
    files = issue(other, "participant", "mallory")
    with pytest.raises(TrustError, match="not issued by federation 'north-isac' CA"):
        TrustRoot.from_ca_dir(ca_dir).verify(files.cert.read_bytes())


def test_expired_and_not_yet_valid_certificates_are_refused(ca_dir: Path) -> None:
    now = datetime.now(UTC)
    old = issue(
        ca_dir,
        "participant",
        "old-org",
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    root = TrustRoot.from_ca_dir(ca_dir)
    with pytest.raises(TrustError, match="'old-org' expired on"):
        root.verify(old.cert.read_bytes())
    fresh = issue(ca_dir, "participant", "new-org")
    with pytest.raises(TrustError, match="not valid until"):
        root.verify(fresh.cert.read_bytes(), now=now - timedelta(days=1))
    with pytest.raises(TrustError, match="expired"):
        root.verify(fresh.cert.read_bytes(), now=now + timedelta(days=400))


def test_revocation_takes_effect_without_reloading_the_trust_root(ca_dir: Path) -> None:
    files = issue(ca_dir, "participant", "org-x")
    keep = issue(ca_dir, "participant", "org-y")
    root = TrustRoot.from_ca_dir(ca_dir)
    assert root.verify(files.cert.read_bytes()).name == "org-x"
    entry = revoke(ca_dir, cert=files.cert, reason="key-compromise")
    assert (entry.name, entry.role, entry.reason) == ("org-x", "participant", "key_compromise")
    with pytest.raises(TrustError, match="certificate of 'org-x' was revoked at"):
        root.verify(files.cert.read_bytes())
    assert root.verify(keep.cert.read_bytes()).name == "org-y"
    # by serial, and idempotent
    revoke(ca_dir, serial=keep.identity.serial)
    with pytest.raises(TrustError, match="revoked"):
        root.verify(keep.cert.read_bytes())
    assert (
        revoke(ca_dir, serial=keep.identity.serial).revoked_at
        == revoke(ca_dir, serial=keep.identity.serial).revoked_at
    )


def test_revoke_input_errors(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        revoke(ca_dir)
    with pytest.raises(ConfigError, match="not in"):
        revoke(ca_dir, serial=12345)
    with pytest.raises(ConfigError, match="unknown revocation reason"):
        revoke(ca_dir, serial=12345, reason="bored")
    stranger = issue(init_ca(tmp_path / "o", "other"), "participant", "p")
    with pytest.raises(ConfigError, match="not issued by the CA"):
        revoke(ca_dir, cert=stranger.cert)


def test_tampered_or_missing_crl_fails_closed(ca_dir: Path, tmp_path: Path) -> None:
    files = issue(ca_dir, "participant", "crl-org")
    crl = tmp_path / "crl.pem"
    crl.write_bytes((ca_dir / "crl.pem").read_bytes())
    root = TrustRoot.from_identity(files.directory, crl)
    root.verify(files.cert.read_bytes())
    other = init_ca(tmp_path / "other", "north-isac")
    crl.write_bytes((other / "crl.pem").read_bytes() + b"\n")
    with pytest.raises(TrustError, match="not signed by the federation CA"):
        root.verify(files.cert.read_bytes())
    crl.unlink()
    with pytest.raises(TrustError, match="unreadable"):
        root.verify(files.cert.read_bytes())


def test_non_phalanx_certificates_are_refused(ca_dir: Path) -> None:
    with pytest.raises(TrustError, match="not a PEM"):
        identity_from_pem(b"garbage")
    ca_pem = (ca_dir / "ca.crt").read_bytes()
    with pytest.raises(TrustError, match="not a Phalanx identity"):
        identity_from_pem(ca_pem)
    with pytest.raises(TrustError):
        TrustRoot.from_ca_dir(ca_dir).verify(ca_pem)


def test_coordinator_certificate_has_hosts_and_server_usage(ca_dir: Path) -> None:
    files = issue(ca_dir, "coordinator", "coord.example.org", hosts=["coord.example.org", "::1"])
    assert files.identity == Identity(
        "coordinator",
        "coord.example.org",
        "north-isac",
        files.identity.serial,
        files.identity.not_after,
    )
    assert TrustRoot.from_ca_dir(ca_dir).verify(files.cert.read_bytes()).role == "coordinator"
    with pytest.raises(ConfigError, match="invalid host"):
        issue(ca_dir, "coordinator", "c2", hosts=["bad host"])


def _server_context(files_dir: Path, crl: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files_dir / "cert.pem", files_dir / "key.pem")
    ctx.load_verify_locations(files_dir / "ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if crl is not None:
        ctx.load_verify_locations(crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def _handshake(server_ctx: ssl.SSLContext, client_dir: Path, host: str) -> str | None:
    """Run one TLS handshake on 127.0.0.1; return the server's error, or None on success."""
    client_ctx = ssl.create_default_context(cafile=str(client_dir / "ca.crt"))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client_ctx.load_cert_chain(client_dir / "cert.pem", client_dir / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                result["peer"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as err:
            result["error"] = str(err)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.recv(2) == b"ok"
    except (ssl.SSLError, OSError) as err:
        result.setdefault("client_error", str(err))
    finally:
        thread.join(5)
        listener.close()
    if "error" in result or "client_error" in result:
        return str(result.get("error", result.get("client_error")))
    return None


def test_issued_files_make_a_mutual_tls_pair(ca_dir: Path) -> None:
    coord = issue(ca_dir, "coordinator", "localhost", out=ca_dir / "tls" / "coord")
    part = issue(ca_dir, "participant", "tls-org")
    server = _server_context(coord.directory, ca_dir / "crl.pem")
    assert _handshake(server, part.directory, "127.0.0.1") is None
    assert _handshake(server, part.directory, "localhost") is None
    revoke(ca_dir, cert=part.cert)
    server = _server_context(coord.directory, ca_dir / "crl.pem")
    assert "revoked" in str(_handshake(server, part.directory, "localhost"))


def test_files_are_created_with_restrictive_modes_regardless_of_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        d = init_ca(tmp_path / "ca", "fed")
        files = issue(d, "participant", "p")
    finally:
        os.umask(old)
    assert _mode(d / "ca.key") == 0o600
    assert _mode(files.key) == 0o600


def test_cli_init_issue_revoke_list(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phalanx.cli.pki import app

    runner = CliRunner()
    d = str(tmp_path / "ca")
    assert runner.invoke(app, ["init", "--federation", "fed", "--dir", d]).exit_code == 0
    again = runner.invoke(app, ["init", "--federation", "fed", "--dir", d])
    assert again.exit_code == 2
    assert "already exists" in again.output
    ok = runner.invoke(app, ["issue", "--dir", d, "--participant", "org-a"])
    assert ok.exit_code == 0, ok.output
    assert (
        runner.invoke(app, ["issue", "--dir", d, "--coordinator", "c", "--host", "::1"]).exit_code
        == 0
    )
    assert runner.invoke(app, ["issue", "--dir", d]).exit_code == 2
    assert runner.invoke(app, ["issue", "--dir", d, "--admin", "x", "--host", "h"]).exit_code == 2
    serial = load_identity(tmp_path / "ca" / "participants" / "org-a").identity.serial
    res = runner.invoke(app, ["revoke", "--dir", d, "--serial", hex(serial)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["revoke", "--dir", d, "--serial", "nope"]).exit_code == 2
    listing = runner.invoke(app, ["list", "--dir", d], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    assert "org-a" in listing.output
    assert "revoked" in listing.output
    assert "valid" in listing.output


# --- model signing ------------------------------------------------------------------------------


def _fake_bundle(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.json").write_text('{"format": "phalanx.model"}\n')
    (folder / "model.safetensors").write_bytes(b"\x00weights" * 32)
    return folder


def test_model_signer_chains_to_the_ca_and_is_usable_only_for_signing(ca_dir: Path) -> None:
    from phalanx.adapters.pki import issue_signer

    signer = issue_signer(ca_dir, "coord.signing-test")
    assert signer.directory == ca_dir / "coordinators" / "coord.signing-test" / "signing"
    assert _mode(signer.key) == 0o600
    trust = TrustRoot.from_ca_dir(ca_dir)
    ident = trust.verify(signer.cert.read_bytes(), usage="model-signing")
    assert (ident.role, ident.name) == ("coordinator", "coord.signing-test")
    with pytest.raises(TrustError, match="not usable as a coordinator"):
        trust.verify(signer.cert.read_bytes())  # cannot serve TLS
    tls = issue(ca_dir, "coordinator", "coord.tls-only")
    with pytest.raises(TrustError, match="not usable"):
        trust.verify(tls.cert.read_bytes(), usage="model-signing")  # TLS key cannot sign
    member = issue(ca_dir, "participant", "org-signs")
    with pytest.raises(TrustError, match="only the coordinator signs"):
        trust.verify(member.cert.read_bytes(), usage="model-signing")
    with pytest.raises(ConfigError, match="already holds a model-signing key"):
        issue_signer(ca_dir, "coord.signing-test")


def test_signed_bundle_verifies_and_any_tampering_is_caught(ca_dir: Path, tmp_path: Path) -> None:
    from phalanx.adapters.pki import Signer, check_signature, issue_signer, sign_bundle

    files = issue_signer(ca_dir, "coord-sign", out=tmp_path / "signing")
    signer = Signer.load(files.directory)
    trust = TrustRoot.from_ca_dir(ca_dir)
    bundle = _fake_bundle(tmp_path / "bundle")
    assert check_signature(bundle, trust).state == "unsigned"
    sign_bundle(bundle, signer)
    status = check_signature(bundle, trust)
    assert status.state == "valid", status.reason
    assert status.signer is not None and status.signer.name == "coord-sign"
    assert status.revocation_checked
    assert check_signature(bundle, None).state == "unverified"

    weights = bundle / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    tampered = check_signature(bundle, trust)
    assert tampered.state == "invalid" and "model.safetensors" in tampered.reason
    weights.write_bytes(original)

    sig = json.loads((bundle / "model.sig").read_text())
    forged = dict(
        sig,
        signature=sig["signature"][:-4] + ("AAAA" if sig["signature"][-4:] != "AAAA" else "BBBB"),
    )
    (bundle / "model.sig").write_text(json.dumps(forged))
    assert check_signature(bundle, trust).state == "invalid"
    (bundle / "model.sig").write_text(json.dumps(sig))
    assert check_signature(bundle, trust).state == "valid"


def test_self_signed_foreign_and_revoked_signers_are_refused(ca_dir: Path, tmp_path: Path) -> None:
    from phalanx.adapters.pki import (
        Signer,
        check_signature,
        issue_signer,
        require_signature,
        sign_bundle,
    )

    trust = TrustRoot.from_ca_dir(ca_dir)
    bundle = _fake_bundle(tmp_path / "b1")
    sign_bundle(bundle, Signer.throwaway())
    assert check_signature(bundle, None).state == "unverified"
    assert check_signature(bundle, trust).state == "invalid"
    with pytest.raises(TrustError, match="refusing model"):
        require_signature(bundle, trust)
    assert require_signature(bundle, trust, allow_unsigned=True).state == "invalid"

    other = init_ca(tmp_path / "other-ca", "south-isac")
    foreign = Signer.load(issue_signer(other, "evil").directory)
    sign_bundle(bundle, foreign)
    status = check_signature(bundle, trust)
    assert status.state == "invalid" and "not issued by" in status.reason

    files = issue_signer(ca_dir, "coord-revoked", out=tmp_path / "revoked-signing")
    sign_bundle(bundle, Signer.load(files.directory))
    assert check_signature(bundle, trust).state == "valid"
    revoke(ca_dir, cert=files.cert, reason="key_compromise")
    status = check_signature(bundle, trust)
    assert status.state == "invalid" and "revoked" in status.reason
    unsigned = _fake_bundle(tmp_path / "b2")
    with pytest.raises(TrustError, match="unsigned signature"):
        require_signature(unsigned, trust)


def test_trust_root_without_crl_skips_revocation(ca_dir: Path) -> None:
    files = issue(ca_dir, "participant", "org-nocrl")
    root = TrustRoot(ca_dir / "ca.crt", None)
    assert not root.checks_revocation
    assert root.verify(files.cert.read_bytes()).name == "org-nocrl"


def test_signer_load_refuses_a_tls_key(ca_dir: Path) -> None:
    from phalanx.adapters.pki import Signer

    tls = issue(ca_dir, "coordinator", "coord-wrongkey")
    with pytest.raises(ConfigError, match="Ed25519"):
        Signer.load(tls.directory)
    with pytest.raises(ConfigError, match="missing"):
        Signer.load(tls.directory / "nowhere")


def test_cli_issues_coordinator_with_signing_identity(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phalanx.cli.pki import app

    runner = CliRunner()
    d = str(tmp_path / "ca")
    assert runner.invoke(app, ["init", "--federation", "fed", "--dir", d]).exit_code == 0
    res = runner.invoke(app, ["issue", "--dir", d, "--coordinator", "hub"])
    assert res.exit_code == 0, res.output
    signing = tmp_path / "ca" / "coordinators" / "hub" / "signing"
    trust = TrustRoot.from_ca_dir(tmp_path / "ca")
    assert trust.verify((signing / "cert.pem").read_bytes(), usage="model-signing").name == "hub"
    res = runner.invoke(
        app, ["issue", "--dir", d, "--model-signer", "hub", "--out", str(tmp_path / "s2")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s2" / "key.pem").is_file()
