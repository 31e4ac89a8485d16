"""reply_frame_size: the length of a reply's frame, computed without building it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from phalanx.core.errors import ProtocolError
from phalanx.core.messages import Reply, Stage, encode_reply, reply_frame_size
from phalanx.core.types import ParticipantId

DTYPES = st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<i8", "<i4", "|u1", "|i1"])
ARRAYS = hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(ARRAYS, max_size=4),
    st.dictionaries(st.text(max_size=5), ARRAYS.map(lambda a: [a]), max_size=2),
    st.dictionaries(st.text(max_size=8), st.floats(allow_nan=True), max_size=3),
    st.text(max_size=20),
    st.integers(-(2**40), 2**40),
)
def test_the_size_is_the_encoded_length(
    arrays: list[np.ndarray],
    extras: dict[str, list[np.ndarray]],
    metrics: dict[str, float],
    refused: str,
    n: int,
) -> None:
    reply = Reply(
        ParticipantId("org-é"), 3, Stage.FIT, "h" * 64, arrays, n, metrics, extras, refused
    )
    assert reply_frame_size(reply) == len(encode_reply(reply))


def test_an_unsendable_dtype_is_refused_by_both() -> None:
    reply = Reply(ParticipantId("p"), 1, Stage.FIT, "h", [np.array(["x"], dtype=object)])
    for fn in (reply_frame_size, encode_reply):
        with pytest.raises(ProtocolError, match="dtype object"):
            fn(reply)
