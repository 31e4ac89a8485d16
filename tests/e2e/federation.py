"""Helpers for end-to-end tests: a throwaway federation of real processes on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from phalanx.adapters.pki import init_ca, issue
from phalanx.adapters.store import SqliteStore

FED = "e2e-fed"
SPEC_TOML = 'kind = "mlp"\nhidden = [32, 16]\ndropout = 0.0\nlr = 0.003\nbatch_size = 128\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Federation:
    """A federation directory: CA, identities, federation.toml, and its processes."""

    root: Path
    orgs: list[str]
    rounds: int
    port: int
    flows: int = 1500
    minimum: int = 0
    deadline_s: float = 60.0
    secure: bool = True
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pki = self.root / "pki"
        init_ca(pki, FED)
        issue(pki, "coordinator", "localhost")
        for org in self.orgs:
            issue(pki, "participant", org)
        issue(pki, "admin", "ops")
        (self.root / "federation.toml").write_text(
            f'[federation]\nname = "{FED}"\n\n[data]\nschema = "netflow-v2"\n\n'
            f"[model]\n{SPEC_TOML}\n"
            f'[training]\nalgorithm = "fedavg"\nrounds = {self.rounds}\nlocal_epochs = 1\n'
            f"seed = 3\nsecure_aggregation = {str(self.secure).lower()}\n\n"
            f"[participants]\nenrolled = {json.dumps(self.orgs)}\n"
            f'admins = ["ops"]\nmin = {self.minimum or len(self.orgs)}\n\n'
            f"[rounds]\ndeadline_s = {self.deadline_s}\nmax_retries = 5\nlinger_s = 1\n\n"
            f'[server]\nlisten = "127.0.0.1:{self.port}"\n\n[state]\ndir = "state"\n'
        )

    def data_spec(self, i: int) -> str:
        return f"synthetic:{self.orgs[i]}:{self.flows}:{100 + i}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        module = "tests.e2e.dying_participant" if args[0] == "--die-at" else "phalanx"
        with (self.root / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.procs[name] = proc
        return proc

    def start_coordinator(self) -> subprocess.Popen[bytes]:
        return self._spawn(
            "coordinator",
            ["coordinator", "serve", "--config", str(self.root / "federation.toml")],
        )

    def start_participant(
        self, i: int, identity: Path | None = None, *, die_at: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start participant ``i``; with ``die_at``, it SIGKILLs itself on receiving that stage
        of round 1 (``tests/e2e/dying_participant.py``)."""
        org = self.orgs[i]
        ident = identity or self.root / "pki" / "participants" / org
        head = ["participant", "join"] if die_at is None else ["--die-at", die_at]
        return self._spawn(
            org,
            [
                *head,
                "--coordinator",
                f"127.0.0.1:{self.port}",
                "--identity",
                str(ident),
                "--data",
                self.data_spec(i),
            ],
        )

    def store(self) -> SqliteStore:
        return SqliteStore(self.root / "state" / "federation.db")

    def completed_rounds(self) -> list[int]:
        db = self.root / "state" / "federation.db"
        if not db.exists():
            return []
        store = self.store()
        try:
            return sorted(r.round for r in store.rounds() if r.state == "completed")
        finally:
            store.close()

    def wait_rounds(self, n: int, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if len(self.completed_rounds()) >= n:
                return
            coord = self.procs.get("coordinator")
            if coord is not None and coord.poll() not in (None, 0):
                raise AssertionError(f"coordinator died:\n{self.log('coordinator')}")
            time.sleep(0.3)
        raise AssertionError(
            f"only rounds {self.completed_rounds()} after {timeout_s} s\n{self.log('coordinator')}"
        )

    def wait_log(self, name: str, text: str, timeout_s: float) -> None:
        """Wait until process ``name`` has written ``text`` to its log."""
        end = time.monotonic() + timeout_s
        while text not in self.log(name):
            if time.monotonic() > end:
                raise AssertionError(f"{name} never logged {text!r}:\n{self.log(name)}")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
