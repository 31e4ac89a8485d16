"""The common label taxonomy every dataset maps into.

Categories (fixed order: the model's output classes are indexed by it):

========== =====================================================================================
benign     normal traffic
dos        denial of service from one source (floods, slowloris, Hulk, neptune, smurf ...)
ddos       distributed denial of service (many sources)
recon      reconnaissance: host and port scans, probes, fingerprinting
brute-force password guessing against SSH, FTP, RDP, web logins
web-attack SQL injection, XSS, command injection against web applications
botnet-c2  bot and command-and-control traffic, beaconing
exploit    exploitation of a vulnerability (buffer overflows, R2L/U2R exploits, shellcode, worms)
backdoor   backdoors and remote-access trojans
infiltration  lateral movement, data exfiltration, theft of data after a compromise
other      attacks no other category describes, and the fallback for labels a mapping does not know
========== =====================================================================================

A dataset label the mapping does not know becomes :data:`FALLBACK` ("other") and is reported by
the reader; it is never dropped silently.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "benign",
    "dos",
    "ddos",
    "recon",
    "brute-force",
    "web-attack",
    "botnet-c2",
    "exploit",
    "backdoor",
    "infiltration",
    "other",
)
BENIGN = "benign"
FALLBACK = "other"
CATEGORY_INDEX: dict[str, int] = {c: i for i, c in enumerate(CATEGORIES)}
