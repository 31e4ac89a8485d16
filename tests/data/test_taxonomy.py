"""The label taxonomy tables: coverage, tolerance, no conflicts."""

from __future__ import annotations

import pytest

from phalanx.core.taxonomy import CATEGORIES, FALLBACK
from phalanx.data.taxonomy import (
    BINARY,
    TABLES,
    categorize,
    categorize_binary,
    label_key,
    lookup,
)

NSL_KDD_NAMES = [
    "normal",
    "neptune",
    "smurf",
    "pod",
    "teardrop",
    "land",
    "back",
    "apache2",
    "udpstorm",
    "processtable",
    "mailbomb",
    "satan",
    "ipsweep",
    "nmap",
    "portsweep",
    "mscan",
    "saint",
    "guess_passwd",
    "ftp_write",
    "imap",
    "phf",
    "multihop",
    "warezmaster",
    "warezclient",
    "spy",
    "xlock",
    "xsnoop",
    "snmpguess",
    "snmpgetattack",
    "httptunnel",
    "sendmail",
    "named",
    "worm",
    "buffer_overflow",
    "loadmodule",
    "rootkit",
    "perl",
    "sqlattack",
    "xterm",
    "ps",
]


def test_every_table_maps_into_the_taxonomy() -> None:
    for table in TABLES.values():
        assert set(table.values()) <= set(CATEGORIES)
    assert set(BINARY.values()) <= set(CATEGORIES)


def test_tables_agree_where_tolerant_keys_collide() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for fmt, table in TABLES.items():
        for name, cat in table.items():
            key = label_key(name)
            if key in seen:
                assert seen[key][1] == cat, (fmt, name, seen[key])
            seen[key] = (name, cat)


@pytest.mark.parametrize("name", NSL_KDD_NAMES)
def test_all_nsl_kdd_attack_names_are_known(name: str) -> None:
    assert lookup(name) is not None


@pytest.mark.parametrize(
    ("label", "category"),
    [
        ("normal", "benign"),
        ("neptune", "dos"),
        ("satan", "recon"),
        ("guess_passwd", "brute-force"),
        ("buffer_overflow", "exploit"),
        (" Fuzzers ", "other"),
        ("Backdoors", "backdoor"),
        ("Backdoor", "backdoor"),
        ("Exploits", "exploit"),
        ("Reconnaissance", "recon"),
        ("BENIGN", "benign"),
        ("DoS Hulk", "dos"),
        ("DoS slowloris", "dos"),
        ("DDoS", "ddos"),
        ("PortScan", "recon"),
        ("Portscan", "recon"),
        ("SSH-Patator", "brute-force"),
        ("Bot", "botnet-c2"),
        ("Botnet", "botnet-c2"),
        ("Web Attack \u2013 Brute Force", "brute-force"),
        ("Web Attack \ufffd Brute Force", "brute-force"),
        ("Web Attack \x96 XSS", "web-attack"),
        ("Web Attack \u00e2\u20ac\u201c Sql Injection", "web-attack"),
        ("Web Attack - SQL Injection", "web-attack"),
        ("Heartbleed", "exploit"),
        ("Infiltration", "infiltration"),
        ("DoS Hulk - Attempted", "dos"),
        ("Web Attack - XSS - Attempted", "web-attack"),
        ("Botnet - Attempted", "botnet-c2"),
        ("WebAttack", "web-attack"),
        ("BruteForce", "brute-force"),
        ("Benign", "benign"),
        ("Theft", "infiltration"),
        ("scanning", "recon"),
        ("password", "brute-force"),
        ("injection", "web-attack"),
        ("ransomware", "other"),
        ("mitm", "other"),
        ("Infilteration", "infiltration"),
        ("Brute Force -Web", "brute-force"),
        ("Brute Force -XSS", "web-attack"),
        ("SQL Injection", "web-attack"),
        ("DDOS attack-HOIC", "ddos"),
        ("DDoS attacks-LOIC-HTTP", "ddos"),
        ("DoS attacks-Hulk", "dos"),
        ("dos   ATTACKS  hulk", "dos"),
        ("FTP-BruteForce", "brute-force"),
        ("SSH-Bruteforce", "brute-force"),
    ],
)
def test_known_labels(label: str, category: str) -> None:
    assert categorize(label) == (category, True)


@pytest.mark.parametrize("label", ["", "   ", "zero-day", "attempted", "1"])
def test_unknown_labels_fall_back_and_say_so(label: str) -> None:
    assert categorize(label) == (FALLBACK, False)


@pytest.mark.parametrize(
    ("value", "category"),
    [("0", "benign"), ("1", "other"), ("normal", "benign"), ("anomaly", "other"), (" 1 ", "other")],
)
def test_binary_labels(value: str, category: str) -> None:
    assert categorize_binary(value) == (category, True)


def test_binary_unknown() -> None:
    assert categorize_binary("2") == (FALLBACK, False)
