"""The documented schemas: registry, kinds, reasons, stable hashes."""

from __future__ import annotations

import pytest

from phalanx.core.features.schema import ColumnKind, FeatureSchema
from phalanx.data.schemas import CIC_IDS2017, NETFLOW_V2, NSL_KDD, SCHEMAS, UNSW_NB15


def test_registry_names_every_source() -> None:
    assert set(SCHEMAS) == {
        "nsl-kdd",
        "unsw-nb15",
        "cic-ids2017",
        "cic-ids2017-improved",
        "netflow-v2",
    }
    for name, schema in SCHEMAS.items():
        assert schema.source == name


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=list(SCHEMAS))
def test_identifiers_have_reasons_and_round_trip(schema: FeatureSchema) -> None:
    for c in schema.columns:
        if c.kind is ColumnKind.IDENTIFIER:
            assert c.reason, c.name
    assert FeatureSchema.from_dict(schema.to_dict()).hash() == schema.hash()
    assert schema.numeric
    assert schema.features


def test_nsl_kdd_layout() -> None:
    assert len(NSL_KDD.features) == 41
    assert NSL_KDD.categorical == ("protocol_type", "service", "flag")
    assert NSL_KDD.identifiers == ("difficulty",)
    assert NSL_KDD.column("src_bytes").heavy_tailed


def test_unsw_ttl_fields_are_excluded_with_a_reason() -> None:
    for name in ("sttl", "dttl", "ct_state_ttl"):
        col = UNSW_NB15.column(name)
        assert col.kind is ColumnKind.IDENTIFIER
        assert "leak" in col.reason
    assert UNSW_NB15.categorical == ("proto", "service", "state")
    for name in ("id", "srcip", "sport", "dstip", "dsport", "stime", "ltime"):
        assert UNSW_NB15.column(name).kind is ColumnKind.IDENTIFIER


def test_cic_original_has_the_77_statistics_and_the_destination_port() -> None:
    assert len(CIC_IDS2017.numeric) == 76  # 77 statistics minus the duplicated header length
    assert CIC_IDS2017.categorical == ("Destination Port", "Protocol")
    assert CIC_IDS2017.column("Flow Bytes/s").heavy_tailed
    assert not CIC_IDS2017.column("SYN Flag Count").heavy_tailed


def test_netflow_v2_is_unchanged() -> None:
    assert len(NETFLOW_V2.columns) == 43
    assert NETFLOW_V2.hash() == SCHEMAS["netflow-v2"].hash()


def test_override_changes_the_hash() -> None:
    kept = UNSW_NB15.with_kinds({"sttl": ColumnKind.NUMERIC})
    assert kept.hash() != UNSW_NB15.hash()
    assert "sttl" in kept.numeric
