"""The records kept beside failed lists (resc.core.failures)."""

from __future__ import annotations

from resc.core.failures import FailedRecord, decode, encode


def test_a_plain_reason_string_is_one_record_without_time_or_attempts():
    assert decode(b"no rule matched") == [FailedRecord("no rule matched")]


def test_records_round_trip_oldest_first_with_microseconds():
    records = [FailedRecord("a", 1764620000.123456, 2), FailedRecord("b", None, None)]
    assert decode(encode(records).encode()) == records
    assert '"time": "1764620000.123456"' in encode(records)


def test_what_is_not_a_json_array_of_records_is_read_as_a_reason():
    assert decode("[not json") == [FailedRecord("[not json")]
    assert decode('{"reason": "x"}') == [FailedRecord('{"reason": "x"}')]
    assert decode('[{"reason": "x", "time": "soon", "attempts": true}]') == [FailedRecord("x")]
    assert decode(None) == []
