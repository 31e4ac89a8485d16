"""Tables behind the synthetic traffic generator: flow kinds, attack families, organizations.

A *kind* is one sort of flow (HTTPS browsing, a DNS lookup, one probe of a port scan ...) given by a
handful of distribution parameters; an *organization profile* mixes benign kinds with its own
weights and says how often each attack family strikes it. :mod:`phalanx.data.synthetic` renders
kinds into NetFlow v2 columns; ``docs/synthetic.md`` explains the choices.

Medians and log-sigmas parametrize lognormals (Paxson & Floyd, "Wide area traffic: the failure of
Poisson modeling", IEEE/ACM ToN 1995: flow sizes and durations are heavy-tailed); bulk transfers
get Pareto packet counts (Crovella & Bestavros, ToN 1997). L7 codes follow nDPI protocol ids written
as the NF-v2 files write them (``"7.0"`` HTTP, ``"91.0"`` TLS ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Pair = tuple[float, float]
TCP, UDP, ICMP = 6, 17, 1
SYN, ACK, RST, FIN, PSH = 2, 16, 4, 1, 8
FULL = FIN | SYN | PSH | ACK  # 27: a complete TCP conversation

ATTACK_FAMILIES: dict[str, str] = {
    "port-scan": "recon",
    "host-scan": "recon",
    "syn-flood": "dos",
    "udp-flood": "dos",
    "ddos": "ddos",
    "ssh-bruteforce": "brute-force",
    "ftp-bruteforce": "brute-force",
    "c2-beacon": "botnet-c2",
    "exfiltration": "infiltration",
    "web-attack": "web-attack",
}
"""Attack family -> taxonomy category (:data:`phalanx.core.taxonomy.CATEGORIES`)."""


@dataclass(frozen=True)
class Kind:
    """One sort of flow.

    ``addressing`` says who talks to whom: ``out`` (internal client to an Internet server), ``in``
    (Internet client to an internal server), ``lan`` (internal to internal), and for attacks
    ``scan-ports``, ``scan-hosts``, ``flood``, ``ddos``, ``targeted``, ``beacon``, ``exfil``.
    Packet counts are client->server (IN); the server's are ``ratio`` times those, or none with
    probability ``no_reply``. ``ctrl`` is the share of header-only packets (size ``csize``) in each
    direction; the others carry data of lognormal size ``size_in``/``size_out``.
    """

    name: str
    family: str
    proto: int
    ports: tuple[int, ...]
    l7: tuple[str, ...]
    addressing: str
    pkts: Pair
    ratio: Pair = (1.0, 0.2)
    no_reply: float = 0.01
    size_in: Pair = (200.0, 0.5)
    size_out: Pair = (200.0, 0.5)
    ctrl: Pair = (0.0, 0.0)
    csize: tuple[int, int] = (52, 52)
    dur: Pair = (100.0, 1.0)
    flags: tuple[int, int] = (0, 0)
    alt_server_flags: tuple[int, float] = (0, 0.0)
    p_rst: float = 0.0
    pareto: float = 0.0
    icmp: int = 0
    dns: bool = False
    ftp: tuple[tuple[int, float], ...] = ()
    win_in: int = -1
    loss: float = 0.0
    window: float = 0.0
    share: float = 1.0
    port_weights: tuple[float, ...] = ()


def _tcp(name: str, family: str, ports: tuple[int, ...], l7: tuple[str, ...], addressing: str,
         pkts: Pair, **kw: Any) -> Kind:  # fmt: skip
    base: dict[str, Any] = {"ctrl": (0.3, 0.3), "flags": (FULL, FULL), "p_rst": 0.05, "loss": 1.0}
    base.update(kw)
    return Kind(name, family, TCP, ports, l7, addressing, pkts, **base)


def _udp(name: str, family: str, ports: tuple[int, ...], l7: tuple[str, ...], addressing: str,
         pkts: Pair, **kw: Any) -> Kind:  # fmt: skip
    return Kind(name, family, UDP, ports, l7, addressing, pkts, **kw)


B = "benign"
# fmt: off
_BENIGN: tuple[Kind, ...] = (
    _tcp("https", B, (443,), ("91.0",), "out", (12, 1.0), ratio=(1.4, 0.4),
         size_in=(300, 0.6), size_out=(1100, 0.4), dur=(800, 1.5)),
    _tcp("http", B, (80, 8080), ("7.0",), "out", (8, 1.0), ratio=(1.3, 0.4),
         size_in=(420, 0.4), size_out=(900, 0.6), dur=(300, 1.4), port_weights=(0.9, 0.1)),
    _udp("dns", B, (53,), ("5.0",), "lan", (1, 0.15), size_in=(75, 0.2), size_out=(140, 0.4),
         dur=(20, 1.0), no_reply=0.02, dns=True),
    _tcp("smtp", B, (25, 587), ("3.0",), "out", (20, 0.8), ratio=(0.8, 0.3),
         size_in=(700, 0.8), size_out=(90, 0.3), dur=(1500, 1.0)),
    _tcp("imaps", B, (993,), ("51.0",), "out", (15, 1.0), ratio=(1.2, 0.3),
         size_in=(150, 0.5), size_out=(700, 0.9), dur=(2000, 1.5)),
    _tcp("smb", B, (445,), ("41.0",), "lan", (30, 1.3), size_in=(500, 1.0),
         size_out=(800, 1.0), dur=(1500, 1.6)),
    _tcp("directory", B, (389, 88), ("112.0", "111.0"), "lan", (6, 0.5), size_in=(250, 0.5),
         size_out=(400, 0.6), dur=(60, 1.0)),
    _udp("ntp", B, (123,), ("9.0",), "out", (1, 0.0), size_in=(76, 0.0), size_out=(76, 0.0),
         dur=(15, 0.8), no_reply=0.03),
    _tcp("ssh-admin", B, (22,), ("92.0",), "lan", (60, 1.4), ratio=(1.1, 0.3),
         size_in=(120, 0.5), size_out=(200, 0.8), dur=(60000, 1.5)),
    _tcp("database", B, (3306, 5432, 1433), ("20.0", "19.0", "114.0"), "lan", (15, 1.2),
         ratio=(1.2, 0.3), size_in=(200, 0.7), size_out=(700, 0.9), dur=(200, 1.5)),
    _tcp("https-server", B, (443,), ("91.0",), "in", (10, 1.0), ratio=(1.4, 0.4),
         size_in=(320, 0.6), size_out=(1000, 0.5), dur=(600, 1.4)),
    _tcp("backup", B, (873, 22), ("0.0", "92.0"), "lan", (800, 0.0), ratio=(0.5, 0.2),
         size_in=(1400, 0.05), size_out=(52, 0.0), ctrl=(0.02, 0.95), dur=(90000, 1.0),
         pareto=1.3),
    _tcp("mqtt", B, (1883, 8883), ("222.0", "91.0"), "lan", (4, 0.3), size_in=(70, 0.3),
         size_out=(60, 0.2), dur=(40, 0.5), p_rst=0.0),
    _tcp("modbus", B, (502,), ("180.0",), "lan", (3, 0.2), size_in=(66, 0.1),
         size_out=(70, 0.2), dur=(15, 0.4), p_rst=0.0),
    _udp("coap", B, (5683,), ("27.0",), "lan", (1, 0.1), size_in=(50, 0.2), size_out=(45, 0.3),
         dur=(5, 0.5), no_reply=0.05),
    _udp("snmp", B, (161,), ("14.0",), "lan", (1, 0.2), size_in=(90, 0.2), size_out=(130, 0.4),
         dur=(10, 0.6)),
    _tcp("rdp", B, (3389,), ("88.0",), "lan", (300, 1.5), size_in=(150, 0.8),
         size_out=(600, 0.9), dur=(300000, 1.5)),
    _udp("quic", B, (443,), ("188.0",), "out", (20, 1.3), ratio=(2.0, 0.5), size_in=(200, 0.8),
         size_out=(1250, 0.2), dur=(2000, 1.8)),
    Kind("ping", B, ICMP, (0,), ("81.0",), "lan", (4, 0.3), size_in=(84, 0.0),
         size_out=(84, 0.0), dur=(3000, 0.3), icmp=2048, no_reply=0.05),
    _tcp("video", B, (443,), ("91.0",), "out", (150, 0.0), ratio=(1.8, 0.3), size_in=(80, 0.3),
         size_out=(1400, 0.05), ctrl=(0.9, 0.02), dur=(120000, 1.2), pareto=1.2),
    _udp("p2p", B, (6881, 51413), ("37.0",), "out", (30, 2.0), ratio=(1.0, 1.0),
         size_in=(600, 1.0), size_out=(700, 1.0), dur=(5000, 2.0), no_reply=0.2),
    _tcp("ftp", B, (21,), ("1.0",), "lan", (12, 0.6), ratio=(1.2, 0.2), size_in=(80, 0.3),
         size_out=(100, 0.4), dur=(2000, 1.0),
         ftp=((226, 0.6), (230, 0.2), (150, 0.12), (530, 0.08))),
    _tcp("hl7", B, (2575,), ("0.0",), "lan", (8, 0.5), size_in=(600, 0.6), size_out=(120, 0.3),
         dur=(150, 0.8)),
    _tcp("dicom", B, (104,), ("0.0",), "lan", (400, 0.0), ratio=(0.5, 0.2), size_in=(1400, 0.05),
         size_out=(52, 0.0), ctrl=(0.02, 0.95), dur=(20000, 1.0), pareto=1.5),
    _tcp("payments", B, (8443,), ("91.0",), "lan", (10, 0.3), size_in=(350, 0.3),
         size_out=(300, 0.3), dur=(80, 0.5)),
    _udp("syslog", B, (514,), ("17.0",), "lan", (1, 0.5), size_in=(220, 0.5), no_reply=1.0,
         dur=(1, 0.5)),
    _tcp("failed", B, (80, 443, 8080, 3389, 22, 0), ("0.0",), "out", (1.5, 0.4),
         ctrl=(1.0, 1.0), flags=(SYN, RST | ACK), no_reply=0.4, dur=(3000, 0.5), p_rst=0.0,
         csize=(52, 40), loss=0.0),
)

_ATTACKS: tuple[Kind, ...] = (
    _tcp("port-scan", "port-scan", (), ("0.0",), "scan-ports", (1, 0.15), ctrl=(1.0, 1.0),
         csize=(44, 40), flags=(SYN, RST | ACK), alt_server_flags=(SYN | ACK, 0.05),
         no_reply=0.3, dur=(50, 0.5), win_in=1024, p_rst=0.3, loss=0.0, window=1800,
         share=0.7),
    _tcp("port-scan-connect", "port-scan", (), ("0.0",), "scan-ports", (1.5, 0.3),
         ctrl=(1.0, 1.0), csize=(52, 40), flags=(SYN | ACK | RST, RST | ACK), no_reply=0.4,
         alt_server_flags=(SYN | ACK, 0.05), dur=(400, 0.8), p_rst=0.0, loss=0.0, window=1800,
         share=0.3),
    Kind("host-scan-icmp", "host-scan", ICMP, (0,), ("81.0",), "scan-hosts", (1, 0.0),
         size_in=(28, 0.0), size_out=(28, 0.0), icmp=2048, no_reply=0.7, window=3600,
         share=0.6),
    _tcp("host-scan-tcp", "host-scan", (445, 22, 80, 3389), ("0.0",), "scan-hosts", (1, 0.0),
         ctrl=(1.0, 1.0), csize=(44, 40), flags=(SYN, RST | ACK), no_reply=0.6, win_in=1024,
         p_rst=0.0, loss=0.0, window=3600, share=0.4),
    _tcp("syn-flood", "syn-flood", (80, 443), ("7.0", "91.0"), "flood", (1.5, 0.5),
         ctrl=(1.0, 1.0), csize=(40, 44), flags=(SYN, SYN | ACK), no_reply=0.5, dur=(800, 0.8),
         win_in=512, p_rst=0.0, loss=0.0, window=900),
    _udp("udp-flood", "udp-flood", (53, 123, 0), ("0.0",), "flood", (60, 1.0), ratio=(0.05, 0.5),
         no_reply=0.85, size_in=(900, 0.7), size_out=(60, 0.3), dur=(1500, 0.8), window=600),
    _tcp("ddos-syn", "ddos", (80, 443), ("7.0", "91.0"), "ddos", (1.5, 0.5), ctrl=(1.0, 1.0),
         csize=(40, 44), flags=(SYN, SYN | ACK), no_reply=0.6, dur=(800, 0.8), win_in=0,
         p_rst=0.0, loss=0.0, window=1200, share=0.4),
    _udp("ddos-udp", "ddos", (53, 123, 1900, 0), ("0.0",), "ddos", (20, 1.0), ratio=(0.05, 0.5),
         no_reply=0.85, size_in=(700, 0.8), size_out=(60, 0.3), dur=(900, 0.9), window=1200,
         share=0.3),
    _tcp("ddos-http", "ddos", (80,), ("7.0",), "ddos", (5, 0.3), ratio=(1.0, 0.2),
         size_in=(250, 0.3), size_out=(350, 0.6), dur=(120, 0.8), win_in=0, window=1200,
         share=0.3),
    _tcp("ssh-bruteforce", "ssh-bruteforce", (22,), ("92.0",), "targeted", (22, 0.25),
         ratio=(1.1, 0.1), size_in=(95, 0.2), size_out=(130, 0.3), ctrl=(0.35, 0.35),
         dur=(2500, 0.4), p_rst=0.3, window=3600),
    _tcp("ftp-bruteforce", "ftp-bruteforce", (21,), ("1.0",), "targeted", (8, 0.2),
         size_in=(72, 0.2), size_out=(95, 0.2), dur=(1200, 0.4), p_rst=0.2, window=2400,
         ftp=((530, 0.85), (331, 0.1), (230, 0.05))),
    _tcp("c2-beacon", "c2-beacon", (443, 8443, 8080, 4444), ("91.0", "91.0", "7.0", "0.0"),
         "beacon", (6, 0.1), ratio=(1.0, 0.05), size_in=(350, 0.08), size_out=(280, 0.1),
         ctrl=(0.5, 0.5), dur=(150, 0.3), p_rst=0.0, port_weights=(0.5, 0.2, 0.2, 0.1)),
    _tcp("exfiltration", "exfiltration", (443, 22, 8443), ("91.0", "92.0", "91.0"), "exfil",
         (600, 0.0), ratio=(0.5, 0.2), size_in=(1380, 0.05), size_out=(52, 0.0),
         ctrl=(0.02, 0.95), dur=(200000, 0.8), pareto=1.1, window=14400,
         port_weights=(0.6, 0.3, 0.1)),
    _tcp("web-injection", "web-attack", (80, 443), ("7.0", "91.0"), "targeted", (6, 0.4),
         size_in=(950, 0.5), size_out=(420, 0.7), dur=(180, 0.8), window=3600, share=0.5),
    _tcp("web-login", "web-attack", (443, 80), ("91.0", "7.0"), "targeted", (8, 0.15),
         size_in=(560, 0.1), size_out=(720, 0.1), dur=(250, 0.3), window=3600, share=0.25),
    _tcp("web-enum", "web-attack", (80, 443), ("7.0", "91.0"), "targeted", (5, 0.2),
         size_in=(240, 0.2), size_out=(310, 0.15), dur=(60, 0.5), window=1800, share=0.25),
)
# fmt: on

KINDS: tuple[Kind, ...] = _BENIGN + _ATTACKS


@dataclass(frozen=True)
class Profile:
    """An organization: its benign mix, its hosts, and the attacks it sees by default."""

    name: str
    benign: Mapping[str, float]
    attack_rate: float
    families: Mapping[str, float]
    clients: int = 2000
    servers: int = 60
    ttl_client: int = 128
    ttl_server: int = 64
    win_client: tuple[int, ...] = (64240, 65535)
    win_server: tuple[int, ...] = (65160, 28960)
    loss: float = 0.005
    tail: float = 1.0
    business: float = 0.6


_OFFICE = Profile(
    "office",
    {"https": 40, "http": 6, "dns": 22, "smtp": 3, "imaps": 4, "smb": 8, "directory": 5,
     "ntp": 1, "quic": 6, "ping": 1, "video": 2, "ftp": 0.5, "failed": 1.5},
    0.15,
    {"port-scan": 0.10, "host-scan": 0.10, "syn-flood": 0.05, "ddos": 0.05,
     "ssh-bruteforce": 0.05, "c2-beacon": 0.30, "exfiltration": 0.25, "web-attack": 0.10},
    business=0.8,
)  # fmt: skip
_DATACENTER = Profile(
    "datacenter",
    {"https-server": 35, "database": 25, "dns": 10, "ssh-admin": 6, "backup": 3,
     "directory": 4, "ntp": 2, "snmp": 4, "syslog": 6, "ping": 2, "ftp": 1, "failed": 2},
    0.25,
    {"port-scan": 0.10, "host-scan": 0.05, "syn-flood": 0.15, "udp-flood": 0.05, "ddos": 0.20,
     "ssh-bruteforce": 0.20, "ftp-bruteforce": 0.10, "exfiltration": 0.05, "web-attack": 0.10},
    clients=400, servers=200, ttl_client=64, win_client=(64240, 29200), business=0.3,
)  # fmt: skip
_IOT = Profile(
    "iot-ot",
    {"mqtt": 40, "modbus": 30, "coap": 15, "dns": 5, "ntp": 4, "snmp": 3, "ping": 2,
     "https": 1, "failed": 0.5},
    0.20,
    {"port-scan": 0.25, "host-scan": 0.25, "udp-flood": 0.20, "ssh-bruteforce": 0.10,
     "c2-beacon": 0.20},
    clients=800, servers=20, ttl_client=64, ttl_server=64, win_client=(5840, 2048, 14600),
    win_server=(5840, 8192), loss=0.002, tail=0.7, business=0.0,
)  # fmt: skip
_ISP = Profile(
    "isp-edge",
    {"https": 30, "http": 8, "quic": 15, "dns": 12, "video": 8, "p2p": 8, "smtp": 3,
     "ntp": 2, "ping": 2, "imaps": 2, "ssh-admin": 1, "ftp": 1, "failed": 8},
    0.30,
    {"port-scan": 0.20, "host-scan": 0.10, "syn-flood": 0.15, "udp-flood": 0.20, "ddos": 0.25,
     "ssh-bruteforce": 0.05, "ftp-bruteforce": 0.05},
    clients=30000, servers=40, ttl_client=64, win_client=(64240, 65535, 29200, 8192),
    loss=0.02, tail=1.35, business=0.2,
)  # fmt: skip
_HOSPITAL = Profile(
    "hospital",
    {"https": 30, "dns": 20, "hl7": 12, "dicom": 3, "smb": 10, "directory": 6, "database": 6,
     "smtp": 2, "ntp": 1, "ping": 2, "rdp": 3, "failed": 1},
    0.12,
    {"port-scan": 0.10, "host-scan": 0.10, "ddos": 0.05, "ftp-bruteforce": 0.05,
     "c2-beacon": 0.30, "exfiltration": 0.30, "web-attack": 0.10},
    clients=1500, servers=80, business=0.7,
)  # fmt: skip
_BANK = Profile(
    "bank",
    {"https-server": 25, "payments": 20, "https": 15, "database": 12, "dns": 12,
     "directory": 5, "smtp": 3, "ssh-admin": 2, "ntp": 1, "ping": 1, "backup": 1,
     "failed": 1},
    0.18,
    {"port-scan": 0.08, "host-scan": 0.05, "syn-flood": 0.10, "ddos": 0.25,
     "ssh-bruteforce": 0.05, "c2-beacon": 0.07, "exfiltration": 0.15, "web-attack": 0.25},
    clients=1000, servers=120, business=0.6,
)  # fmt: skip

PROFILE_TABLE: dict[str, Profile] = {
    p.name: p for p in (_OFFICE, _DATACENTER, _IOT, _ISP, _HOSPITAL, _BANK)
}
