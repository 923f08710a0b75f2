"""Unit tests of prefork.control, the wire format of worker channels and the ctl socket."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork.control import (
    MAX_FRAME,
    FrameError,
    FrameReader,
    decode_body,
    encode_frame,
    parse_request,
    recv_message,
    reply_error,
    reply_ok,
    request,
    send_message,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_encode_frame_is_length_prefixed_json() -> None:
    data = encode_frame({"id": 1, "command": "ping", "args": []})
    body = b'{"id":1,"command":"ping","args":[]}'
    assert data == struct.pack(">I", len(body)) + body


def test_encode_refuses_unserialisable_and_oversized() -> None:
    with pytest.raises(FrameError, match="JSON-serialisable"):
        encode_frame({"x": object()})
    with pytest.raises(FrameError, match="exceeds"):
        encode_frame({"x": "a" * MAX_FRAME})


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"\xff\xfe", "UTF-8"),
        (b"{not json", "UTF-8 JSON"),
        (b"[1, 2]", "JSON list"),
        (b'"text"', "JSON str"),
        (b"[" * 100_000, "UTF-8 JSON"),  # nested too deep for the decoder: an error, not a crash
    ],
)
def test_decode_body_errors_name_the_problem(body: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_body(body)


def test_reader_handles_split_and_joined_frames() -> None:
    data = encode_frame({"a": 1}) + encode_frame({"b": 2}) + encode_frame({"c": 3})
    reader = FrameReader()
    got = []
    for i in range(len(data)):
        got.extend(reader.feed(data[i : i + 1]))
    assert got == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert reader.pending == 0
    assert list(FrameReader().feed(data)) == got


def test_malformed_body_keeps_the_stream_in_sync() -> None:
    reader = FrameReader()
    data = frame(b"garbage") + encode_frame({"after": True})
    with pytest.raises(FrameError):
        list(reader.feed(data))
    # the next frame is still buffered and comes out on the next feed
    assert list(reader.feed(b"")) == [{"after": True}]


def test_oversized_length_breaks_the_reader() -> None:
    reader = FrameReader(max_frame=100)
    with pytest.raises(FrameError, match="exceeds"):
        list(reader.feed(struct.pack(">I", 101)))
    assert reader.broken and reader.pending == 0
    with pytest.raises(FrameError, match="out of sync"):
        list(reader.feed(encode_frame({"a": 1})))


def test_truncated_frame_is_only_pending() -> None:
    reader = FrameReader()
    data = encode_frame({"id": 3, "command": "stats"})
    assert list(reader.feed(data[:-1])) == []
    assert reader.pending == len(data) - 1
    assert list(reader.feed(data[-1:])) == [{"id": 3, "command": "stats"}]


def test_request_and_replies() -> None:
    assert request(7, "stats", ("a", 1)) == {"id": 7, "command": "stats", "args": ["a", 1]}
    assert reply_ok(7, {"x": 1}) == {"id": 7, "ok": True, "result": {"x": 1}}
    assert reply_error(7, "boom") == {"id": 7, "ok": False, "error": "boom"}
    assert parse_request({"id": 1, "command": "ping"}) == (1, "ping", [])
    assert parse_request(request(2, "workers", [3])) == (2, "workers", [3])


@pytest.mark.parametrize(
    "message, reason",
    [({}, "command"), ({"command": ""}, "command"), ({"command": 5}, "command"),
     ({"command": "x", "args": "a b"}, "array"), ({"command": "x", "args": {"a": 1}}, "array")],
)
def test_parse_request_rejects_wrong_types(message: dict, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        parse_request(message)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_crash_the_reader(chunks: list[bytes]) -> None:
    reader = FrameReader(max_frame=256)
    for chunk in chunks:
        try:
            for message in reader.feed(chunk):
                assert isinstance(message, dict)
        except FrameError:
            pass  # the only exception a reader may raise
        assert reader.pending <= 256 + 4 + 64  # memory is bounded by the frame limit


@settings(max_examples=100, deadline=None)
@given(st.lists(json_objects, min_size=1, max_size=5), st.data())
def test_framing_round_trips(messages: list[dict], data) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = FrameReader()
    got: list[dict] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got.extend(reader.feed(stream[start:cut]))
        start = cut
    assert got == messages
    assert reader.pending == 0


def test_send_and_recv_over_a_real_socketpair() -> None:
    left, right = socket.socketpair()
    with left, right:
        send_message(left, request(1, "ping"))
        send_message(left, request(2, "stats"))
        reader = FrameReader()
        assert recv_message(right, reader, timeout=5) == request(1, "ping")
        assert recv_message(right, reader, timeout=5) == request(2, "stats")  # was buffered
        with pytest.raises(TimeoutError):
            recv_message(right, reader, timeout=0.05)
        left.close()
        with pytest.raises(EOFError):
            recv_message(right, reader, timeout=5)


def test_recv_message_waits_for_a_slow_writer() -> None:
    left, right = socket.socketpair()
    data = encode_frame(reply_ok(9, "done"))
    writer = threading.Thread(target=lambda: [left.sendall(data[:3]), left.sendall(data[3:])])
    with left, right:
        writer.start()
        assert recv_message(right, FrameReader(), timeout=5) == reply_ok(9, "done")
        writer.join()
