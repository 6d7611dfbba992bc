"""An append's envelope tail (``Codec.meta_tail``), whose fields after the time are kept from
one append to the next, is byte for byte the JSON of the whole envelope tail encoded anew:
whatever the time (an int, a float, its sign, its exponent) and the names (empty ones are left
out, any text), first time or again."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events.codec import Codec, _MetaTail

times = st.one_of(
    st.floats(min_value=-62135596800.0, max_value=253402300799.0),
    st.integers(-62135596800, 253402300799),
    st.sampled_from([0, 0.0, -0.0, 1e-7, 1e16]),
)
names = st.sampled_from(["", "cg", "nightly", 'é"\\\n', "vm/12035/66171/68c50a"]) | st.text()

CODEC = Codec()
ENCODER = msgspec.json.Encoder()


@settings(max_examples=300)
@given(time=times, session=names, causation_id=names, correlation_id=names, actor=names)
def test_the_tail_is_the_envelope_encoded_anew(
    time: float, session: str, causation_id: str, correlation_id: str, actor: str
) -> None:
    whole = ENCODER.encode(
        _MetaTail(
            time=time,
            session=session,
            causation_id=causation_id,
            correlation_id=correlation_id,
            actor=actor,
        )
    )
    for _ in range(2):  # encoded the first time, then kept
        assert CODEC.meta_tail(time, session, causation_id, correlation_id, actor) == whole[1:]
