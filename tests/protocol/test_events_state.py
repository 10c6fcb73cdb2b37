"""Event messages and the pure bookkeeping of streams: round trips, numbering, gap accounting."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmicro import OverloadedError, ProtocolError
from zmicro.protocol import (
    Event,
    GapTracker,
    StreamTable,
    Subscribe,
    Subscribed,
    Subscription,
    decode,
    decode_value,
    encode_event,
    encode_subscribe,
    encode_subscribed,
    encode_value,
)

fast = settings(max_examples=150, deadline=None, database=None)
MAX = 2**63 - 1
names = st.text(min_size=1, max_size=255)
prefixes = st.text(max_size=255)
modes = st.sampled_from(["broadcast", "group"])


@fast
@given(names, names, st.lists(st.tuples(prefixes, modes), max_size=20))
def test_subscribe_round_trip(service: str, instance: str, subs: list[tuple[str, str]]) -> None:
    data = encode_subscribe(service, instance, subs)
    assert data[:4] == b"ZM\x01\x07"
    assert decode(data) == Subscribe(service, instance, [Subscription(p, m) for p, m in subs])


@fast
@given(names, st.integers(1, MAX), st.integers(0, MAX))
def test_subscribed_round_trip(service: str, epoch: int, last: int) -> None:
    data = encode_subscribed(service, epoch, last)
    assert data[:4] == b"ZM\x01\x08"
    assert decode(data) == Subscribed(service, epoch, last)


@fast
@given(names, st.integers(1, MAX), st.integers(1, MAX), st.booleans(), st.text(min_size=1, max_size=255))
def test_event_round_trip(service: str, epoch: int, seq: int, group: bool, topic: str) -> None:
    data = encode_event(service, epoch, seq, group, topic, encode_value({"a": [1, 2]}))
    assert data[:4] == b"ZM\x01\x09"
    msg = decode(data)
    assert isinstance(msg, Event)
    assert (msg.service, msg.epoch, msg.seq, msg.group, msg.topic) == (service, epoch, seq, group, topic)
    assert decode_value(msg.payload) == {"a": [1, 2]}


@pytest.mark.parametrize(
    "fields",
    [
        ["s", "i", [["p", "sometimes"]]],  # unknown mode
        ["s", "i", [["p" * 256, "group"]]],  # prefix too long
        ["s", "i", [["p", "group"]] * 257],  # too many subscriptions
        ["", "i", []],
    ],
)
def test_bad_subscribe_is_a_protocol_error(fields: list[Any]) -> None:
    with pytest.raises(ProtocolError):
        decode(b"ZM\x01\x07" + msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(
    "fields",
    [
        ["s", 0, 1, True, "t", None],  # epoch 0
        ["s", 1, 0, True, "t", None],  # seq 0
        ["s", 1, 1, True, "", None],  # empty topic
        ["s", 1, 1, 1, "t", 0],  # group not a bool
    ],
)
def test_bad_event_is_a_protocol_error(fields: list[Any]) -> None:
    with pytest.raises(ProtocolError):
        decode(b"ZM\x01\x09" + msgspec.msgpack.encode(fields))


# -- gap accounting ------------------------------------------------------------------------


@fast
@given(st.lists(st.booleans(), min_size=1, max_size=300), st.lists(st.integers(0, 299), max_size=5))
def test_every_number_is_delivered_or_counted_once(arrives: list[bool], reconnects: list[int]) -> None:
    """Events 1..n, some lost on the way; at some points the subscriber reconnects (an ack
    carrying the last number used). Delivered + gaps always equals the last number."""
    tracker = GapTracker()
    tracker.on_ack(7, 0)
    delivered = reported = 0
    for seq, arrived in enumerate(arrives, start=1):
        if seq - 1 in reconnects:
            tracker.on_ack(7, seq - 1)
        if arrived:
            gap = tracker.on_event(7, seq)
            assert gap is not None
            delivered += 1
            reported += gap
    tracker.on_ack(7, len(arrives))  # a final ack tells about a lost tail
    assert delivered + tracker.gaps == len(arrives)
    assert reported + tracker.pending_gap == tracker.gaps
    assert tracker.on_event(7, 1) is None  # a straggler is never delivered twice
    assert tracker.stale == 1


def test_a_new_epoch_is_a_restart_and_starts_over() -> None:
    tracker = GapTracker()
    tracker.on_ack(1, 0)
    assert tracker.on_event(1, 1) == 0
    assert tracker.on_event(2, 5) is None  # only an ack switches epochs
    tracker.on_ack(2, 3)  # the new process numbered 3 events for us before we got through
    assert (tracker.restarts, tracker.gaps, tracker.take_restarted()) == (1, 3, True)
    assert tracker.on_event(2, 4) == 3
    assert tracker.take_restarted() is False


def test_shed_events_are_reported_with_the_next() -> None:
    tracker = GapTracker()
    tracker.on_ack(1, 0)
    gap = tracker.on_event(1, 3)  # 1 and 2 missed
    assert gap == 2
    tracker.shed(gap, False)  # and 3 dropped locally
    assert tracker.on_event(1, 4) == 3
    assert tracker.gaps == 3


# -- stream table ----------------------------------------------------------------------------


def test_targets_broadcast_every_instance_group_one_round_robin() -> None:
    table = StreamTable()
    for n in range(3):
        table.subscribe(("audit", f"a{n}"), b"A%d" % n, [("order.", "broadcast")], 0.0)
        table.subscribe(("mail", f"m{n}"), b"M%d" % n, [("order.placed", "group")], 0.0)
    targets = table.targets("order.placed")
    assert sorted(t.candidates[0].instance_id for t in targets if not t.group) == ["a0", "a1", "a2"]
    firsts = []
    for _ in range(6):
        (group,) = [t for t in table.targets("order.placed") if t.group]
        firsts.append(group.candidates[0].instance_id)
    assert sorted(firsts) == ["m0", "m0", "m1", "m1", "m2", "m2"]
    assert [t.group for t in table.targets("order.shipped")] == [False, False, False]
    assert table.targets("invoice") == []


def test_connected_instances_are_chosen_first_and_detached_streams_expire() -> None:
    table = StreamTable(detached_ttl=10.0)
    a = table.subscribe(("mail", "a"), b"A", [("", "group")], 0.0)
    table.subscribe(("mail", "b"), b"B", [("", "group")], 0.0)
    table.detach(a, now=1.0)
    for _ in range(4):
        (target,) = table.targets("x")
        assert target.candidates[0].instance_id == "b"
    assert table.expire(now=5.0) == 0
    assert table.expire(now=12.0) == 1
    assert [s.instance_id for s in table.streams()] == ["b"]


def test_registry_known_streams_are_expected_and_bounded() -> None:
    table = StreamTable(max_streams=2)
    table.expect({("mail", "a"): (("", "group"),), ("mail", "b"): (("", "group"),)}, now=0.0)
    assert all(s.peer is None and s.from_registry for s in table.streams())
    with pytest.raises(OverloadedError):
        table.subscribe(("mail", "c"), b"C", [("", "group")], 0.0)
    table.expect({("mail", "a"): (("", "group"),)}, now=1.0)  # b left the registry
    assert [s.instance_id for s in table.streams()] == ["a"]


def test_doc_examples_match_the_encoder() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!--\s*events-hexdump:\s*([\w-]+)\s*-->\s*\n```[^\n]*\n(.*?)\n```", text, re.DOTALL)
    dumps = {
        name: bytes.fromhex(" ".join(line.split(":", 1)[1] for line in block.splitlines()))
        for name, block in blocks
    }
    assert dumps == {
        "subscribe": encode_subscribe("emails", "emails-1", [("order.", "group")]),
        "subscribed": encode_subscribed("emails", 5, 0),
        "event": encode_event("emails", 5, 1, True, "order.placed", encode_value({"id": 7})),
    }
