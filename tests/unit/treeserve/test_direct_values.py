"""The direct reader's shortcut for Float64 values reads what the protobuf parse reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value

from treeserve.encoding import Vocabulary
from treeserve.features.direct import _value, plain_doubles, value_to_float

DOUBLES = [0.0, -0.0, 1.2345, -7.5e300, 5e-324, math.inf, -math.inf, 1e16 + 1]


def both(raw: bytes, encoding: Vocabulary | None = None) -> tuple[float, float]:
    """(the reader's value, the protobuf parse's value) of one stored ``ValueProto``."""
    v = _value(raw, Value.FromString, encoding is None)
    fast = math.nan if v is None else v if v.__class__ is float else value_to_float(v, encoding)
    return fast, value_to_float(Value.FromString(raw), encoding)


@pytest.mark.parametrize("x", DOUBLES)
def test_a_double_reads_as_the_parse_reads_it(x: float) -> None:
    raw = Value(double_val=x).SerializeToString()
    got, want = both(raw)
    assert got == want and math.copysign(1, got) == math.copysign(1, want)
    assert _value(raw, Value.FromString, True).__class__ is float  # the shortcut was taken


def test_a_nan_double_stays_nan() -> None:
    got, want = both(Value(double_val=math.nan).SerializeToString())
    assert math.isnan(got) and math.isnan(want)


@pytest.mark.parametrize(
    "value", [Value(int64_val=42), Value(int32_val=-3), Value(float_val=2.5), Value(bool_val=True), Value()]
)
def test_other_kinds_are_parsed(value: Value) -> None:
    raw = value.SerializeToString()
    got, want = both(raw)
    assert got == want or (math.isnan(got) and math.isnan(want))


def test_nothing_stored_is_none_and_an_encoded_feature_never_takes_the_shortcut() -> None:
    assert _value(b"", Value.FromString, True) is None
    vocab = Vocabulary(("gold", "silver"))
    raw = Value(double_val=1.0).SerializeToString()
    assert not isinstance(_value(raw, Value.FromString, False), float)
    got, want = both(raw, vocab)
    assert math.isnan(got) and math.isnan(want)  # a number where a category belongs: missing
    got, want = both(Value(string_val="silver").SerializeToString(), vocab)
    assert got == want == vocab.code("silver")


def test_a_batch_of_plain_doubles_reads_at_once_as_the_parse_reads_each() -> None:
    raws = [Value(double_val=x).SerializeToString() for x in [*DOUBLES, math.nan]]
    got = plain_doubles(raws)
    assert got is not None and got.dtype == np.float64
    want = np.array([value_to_float(Value.FromString(r)) for r in raws])
    np.testing.assert_array_equal(got, want)  # NaN == NaN here, -0.0 kept
    assert math.copysign(1, got[1]) == -1.0


def test_values_not_stored_read_as_nan_beside_the_doubles() -> None:
    one, two = (Value(double_val=x).SerializeToString() for x in (1.0, 2.0))
    got = plain_doubles([one, None, b"", two])
    assert got is not None
    np.testing.assert_array_equal(got, [1.0, math.nan, math.nan, 2.0])
    got = plain_doubles([None, b""])  # an entity with nothing stored
    assert got is not None and np.isnan(got).all()


@pytest.mark.parametrize(
    "odd",
    [
        Value(int64_val=2**55).SerializeToString(),
        Value(float_val=1.5).SerializeToString(),
        Value(int64_val=3).SerializeToString(),
    ],
    ids=["a 9-byte int64", "a float", "a short int64"],
)
def test_a_batch_with_another_kind_is_left_to_the_value_by_value_path(odd: bytes) -> None:
    raws = [Value(double_val=1.0).SerializeToString(), odd, None, Value(double_val=2.0).SerializeToString()]
    if len(odd) == 9:
        assert odd[0] != 0x29  # same length as a double, another kind: the tag tells them apart
    assert plain_doubles(raws) is None
