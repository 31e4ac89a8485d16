"""Mapping tables from each dataset's attack names to the common taxonomy.

Every source names its attacks its own way (``neptune``, ``DoS Hulk``, ``DDOS attack-HOIC``,
``Web Attack \u2013 Brute Force`` with an en dash that older tools turn into mojibake). The tables
below map each dataset's original label to one of :data:`phalanx.core.taxonomy.CATEGORIES`.
Lookup is tolerant: case, spaces and punctuation are ignored (``"DoS  attacks-Hulk"`` and
``"dos attacks hulk"`` are the same key), DistriNet's ``" - Attempted"`` suffix maps to the
category of the attack that was attempted, and binary label columns (``0``/``1``,
``normal``/``anomaly``) map to ``benign`` / ``other``.

A label no table knows maps to :data:`~phalanx.core.taxonomy.FALLBACK` and is reported by the
reader as unknown; it is never dropped. The full table is documented in ``docs/data.md``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from phalanx.core.taxonomy import BENIGN, FALLBACK

_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# --- NSL-KDD (Tavallaee et al. 2009; attack names from the DARPA 1998/1999 evaluations) ---------
NSL_KDD: dict[str, str] = {
    "normal": BENIGN,
    # DoS
    "neptune": "dos",
    "smurf": "dos",
    "pod": "dos",
    "teardrop": "dos",
    "land": "dos",
    "back": "dos",
    "apache2": "dos",
    "udpstorm": "dos",
    "processtable": "dos",
    "mailbomb": "dos",
    # Probe
    "satan": "recon",
    "ipsweep": "recon",
    "nmap": "recon",
    "portsweep": "recon",
    "mscan": "recon",
    "saint": "recon",
    "snmpgetattack": "recon",
    # R2L
    "guess_passwd": "brute-force",
    "snmpguess": "brute-force",
    "ftp_write": "exploit",
    "imap": "exploit",
    "phf": "web-attack",
    "multihop": "exploit",
    "warezmaster": "exploit",
    "warezclient": "exploit",
    "sendmail": "exploit",
    "named": "exploit",
    "worm": "exploit",
    "spy": "infiltration",
    "xlock": "infiltration",
    "xsnoop": "infiltration",
    "httptunnel": "backdoor",
    # U2R
    "buffer_overflow": "exploit",
    "loadmodule": "exploit",
    "rootkit": "exploit",
    "perl": "exploit",
    "sqlattack": "exploit",
    "xterm": "exploit",
    "ps": "exploit",
}

# --- UNSW-NB15 (Moustafa & Slay 2015): attack_cat values; the raw files also spell 'Backdoors' ----
UNSW_NB15: dict[str, str] = {
    "Normal": BENIGN,
    "Analysis": "recon",
    "Backdoor": "backdoor",
    "Backdoors": "backdoor",
    "DoS": "dos",
    "Exploits": "exploit",
    "Fuzzers": "other",
    "Generic": "other",
    "Reconnaissance": "recon",
    "Shellcode": "exploit",
    "Worms": "exploit",
}

# --- CIC-IDS2017 (Sharafaldin et al. 2018), DistriNet re-extraction, grouped samples ----------
CIC_IDS2017: dict[str, str] = {
    "BENIGN": BENIGN,
    "DoS Hulk": "dos",
    "DoS GoldenEye": "dos",
    "DoS slowloris": "dos",
    "DoS Slowhttptest": "dos",
    "DDoS": "ddos",
    "PortScan": "recon",
    "FTP-Patator": "brute-force",
    "SSH-Patator": "brute-force",
    "Bot": "botnet-c2",
    "Botnet": "botnet-c2",
    "Web Attack \u2013 Brute Force": "brute-force",
    "Web Attack \u2013 XSS": "web-attack",
    "Web Attack \u2013 Sql Injection": "web-attack",
    "Infiltration": "infiltration",
    "Infiltration - Portscan": "infiltration",
    "Heartbleed": "exploit",
    # grouped labels of third-party samples
    "WebAttack": "web-attack",
    "BruteForce": "brute-force",
    "DoS": "dos",
}

# --- NetFlow v2 (Sarhan et al. 2022): Attack values of the four NF-*-v2 datasets ------------------
NETFLOW_V2: dict[str, str] = {
    "Benign": BENIGN,
    # NF-BoT-IoT-v2
    "DDoS": "ddos",
    "DoS": "dos",
    "Reconnaissance": "recon",
    "Theft": "infiltration",
    # NF-ToN-IoT-v2
    "scanning": "recon",
    "xss": "web-attack",
    "password": "brute-force",
    "injection": "web-attack",
    "backdoor": "backdoor",
    "ransomware": "other",
    "mitm": "other",
    # NF-UNSW-NB15-v2: the UNSW-NB15 categories (see UNSW_NB15)
    # NF-CSE-CIC-IDS2018-v2
    "Bot": "botnet-c2",
    "FTP-BruteForce": "brute-force",
    "SSH-Bruteforce": "brute-force",
    "Infilteration": "infiltration",
    "Brute Force -Web": "brute-force",
    "Brute Force -XSS": "web-attack",
    "SQL Injection": "web-attack",
    "DDOS attack-HOIC": "ddos",
    "DDOS attack-LOIC-UDP": "ddos",
    "DDoS attacks-LOIC-HTTP": "ddos",
    "DoS attacks-Hulk": "dos",
    "DoS attacks-GoldenEye": "dos",
    "DoS attacks-Slowloris": "dos",
    "DoS attacks-SlowHTTPTest": "dos",
}

# --- IoT-23 / Stratosphere labelled Zeek conn logs (Garcia, Parmisano, Erquiaga, Zenodo 2020) ---
# ``label`` is Benign/Malicious; Malicious rows carry a ``detailed-label`` named here.
IOT_23: dict[str, str] = {
    "Benign": BENIGN,
    "Malicious": FALLBACK,
    "Attack": FALLBACK,
    "C&C": "botnet-c2",
    "C&C-HeartBeat": "botnet-c2",
    "C&C-HeartBeat-Attack": "botnet-c2",
    "C&C-HeartBeat-FileDownload": "botnet-c2",
    "C&C-FileDownload": "botnet-c2",
    "C&C-Torii": "botnet-c2",
    "C&C-Mirai": "botnet-c2",
    "C&C-PartOfAHorizontalPortScan": "botnet-c2",
    "Okiru": "botnet-c2",
    "Okiru-Attack": "botnet-c2",
    "Torii": "botnet-c2",
    "FileDownload": "botnet-c2",
    "DDoS": "ddos",
    "PartOfAHorizontalPortScan": "recon",
    "PartOfAHorizontalPortScan-Attack": "recon",
}

TABLES: dict[str, dict[str, str]] = {
    "nsl-kdd": NSL_KDD,
    "unsw-nb15": UNSW_NB15,
    "cic-ids2017": CIC_IDS2017,
    "netflow-v2": {**NETFLOW_V2, **UNSW_NB15},
    "zeek-conn": IOT_23,
}
"""Per-format tables, original label -> category (as documented in ``docs/data.md``)."""

BINARY: dict[str, str] = {
    "0": BENIGN,
    "normal": BENIGN,
    "benign": BENIGN,
    "false": BENIGN,
    "1": FALLBACK,
    "anomaly": FALLBACK,
    "attack": FALLBACK,
    "malicious": FALLBACK,
    "true": FALLBACK,
}
"""Binary label values (a source that only says attack / no attack): attacks go to ``other``."""

_ATTEMPTED = "attempted"


def label_key(label: str) -> str:
    """The tolerant lookup key of a label: lower case, only letters and digits.

    >>> label_key("Web Attack \ufffd Brute Force") == label_key("web attack - brute force")
    True
    """
    return _NON_ALNUM.sub("", label.lower())


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """All tables merged under tolerant keys (built on first use, not at import)."""
    merged: dict[str, str] = {}
    for table in TABLES.values():
        for name, category in table.items():
            merged[label_key(name)] = category
    return merged


def lookup(label: str) -> str | None:
    """The category of a dataset label, or ``None`` when no table knows it.

    Parameters
    ----------
    label:
        The label as the dataset spells it (any case, spacing, dash or mojibake).
    """
    key = label_key(label)
    if not key:
        return None
    index = _index()
    found = index.get(key)
    if found is None and key.endswith(_ATTEMPTED) and len(key) > len(_ATTEMPTED):
        found = index.get(key[: -len(_ATTEMPTED)])
    return found


def categorize(label: str) -> tuple[str, bool]:
    """``(category, known)`` for a multi-class label; unknown labels go to ``FALLBACK``."""
    found = lookup(label)
    return (FALLBACK, False) if found is None else (found, True)


def categorize_binary(value: str) -> tuple[str, bool]:
    """``(category, known)`` for a binary label value (``0``/``1``, ``normal``/``anomaly``)."""
    found = BINARY.get(value.strip().lower())
    return (FALLBACK, False) if found is None else (found, True)
