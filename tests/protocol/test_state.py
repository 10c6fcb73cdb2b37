"""The pure state machines of the protocol package: ``CallTable`` (caller) and ``Admission`` (server).

No sockets, no event loop: time is a number passed in. ``CallTable`` is checked against
a plain dict model, both by a Hypothesis state machine and by long seeded random runs
that are sure to trigger heap compaction.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from zmicro import OverloadedError
from zmicro.protocol import Admission, CallTable, Verdict

# -- CallTable: direct cases ------------------------------------------------------


def test_ids_are_unique_and_increasing() -> None:
    table: CallTable[str] = CallTable(max_pending=10_000)
    seen: list[int] = []
    for i in range(1000):
        seen.append(table.add(f"w{i}", deadline=float(i % 7)))
        if i % 3:
            table.pop(seen[-1])
        if i % 5 == 0:
            table.expire(3.0)
    assert seen == sorted(set(seen))
    assert seen[0] >= 1


def test_pop_returns_the_waiter_once_then_counts_late() -> None:
    table: CallTable[str] = CallTable()
    rid = table.add("w", deadline=10.0)
    assert rid in table
    assert table.pop(rid) == "w"
    assert rid not in table
    assert table.late_replies == 0
    assert table.pop(rid) is None  # duplicate reply
    assert table.pop(rid + 1000) is None  # made-up id
    assert table.late_replies == 2


def test_expired_call_reply_is_late() -> None:
    table: CallTable[str] = CallTable()
    rid = table.add("w", deadline=1.0)
    assert table.expire(1.0) == [(rid, "w")]
    assert table.expired == 1
    assert table.pop(rid) is None
    assert table.late_replies == 1


def test_discard_does_not_count_late() -> None:
    table: CallTable[str] = CallTable()
    rid = table.add("w", deadline=10.0)
    assert table.discard(rid) == "w"
    assert table.discard(rid) is None
    assert table.discard(12345) is None
    assert table.late_replies == 0
    assert len(table) == 0
    assert table.expire(100.0) == []  # its heap entry is stale, not a call
    assert table.expired == 0


def test_expire_returns_exactly_the_calls_due() -> None:
    table: CallTable[str] = CallTable()
    deadlines = {table.add(f"w{d}", deadline=d): d for d in (5.0, 1.0, 3.0, 3.0, 2.0, 4.0)}
    assert table.next_deadline() == 1.0
    assert table.expire(0.5) == []
    due = table.expire(3.0)
    assert sorted(rid for rid, _ in due) == sorted(r for r, d in deadlines.items() if d <= 3.0)
    assert all(w == f"w{deadlines[r]}" for r, w in due)
    assert table.expired == 4
    assert sorted(table.ids()) == sorted(r for r, d in deadlines.items() if d > 3.0)
    assert table.next_deadline() == 4.0


def test_max_pending() -> None:
    table: CallTable[int] = CallTable(max_pending=3)
    rids = [table.add(i, deadline=1.0) for i in range(3)]
    with pytest.raises(OverloadedError) as info:
        table.add(3, deadline=1.0)
    assert info.value.code == "overloaded"
    assert len(table) == 3
    table.pop(rids[0])
    new = table.add(4, deadline=1.0)  # room again
    assert new > max(rids)
    with pytest.raises(OverloadedError):
        table.add(5, deadline=1.0)


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        CallTable(max_pending=0)


def test_ids_oldest_first_and_drain() -> None:
    table: CallTable[str] = CallTable()
    a, b, c = (table.add(w, deadline=d) for w, d in (("a", 3.0), ("b", 1.0), ("c", 2.0)))
    table.pop(b)
    assert table.ids() == [a, c]
    assert table.drain() == [(a, "a"), (c, "c")]
    assert len(table) == 0
    assert table.next_deadline() is None
    assert table.expire(10.0) == []
    assert table.add("d", deadline=1.0) > c  # ids are not reused after a drain


def test_next_deadline_skips_ended_calls() -> None:
    table: CallTable[str] = CallTable()
    first = table.add("a", deadline=1.0)
    table.add("b", deadline=2.0)
    table.pop(first)
    assert table.next_deadline() == 2.0


def test_many_add_expire_cycles_leave_nothing_behind() -> None:
    table: CallTable[int] = CallTable(max_pending=100)
    now = 0.0
    for i in range(20_000):
        now += 0.001
        table.add(i, deadline=now)
        if i % 2:
            assert len(table.expire(now)) == 2
    table.expire(now)
    assert len(table) == 0
    assert table.expired == 20_000
    assert len(table._heap) <= 64
    assert table.next_deadline() is None


def test_many_add_pop_cycles_keep_the_heap_small() -> None:
    # Replies that come back in time leave stale heap entries; compaction bounds them.
    table: CallTable[int] = CallTable()
    for i in range(20_000):
        rid = table.add(i, deadline=1e9 + i)
        assert table.pop(rid) == i
    assert len(table) == 0
    assert table.late_replies == 0
    assert len(table._heap) <= 2 * len(table) + 65
    assert table.next_deadline() is None


def test_compaction_with_calls_still_pending() -> None:
    table: CallTable[int] = CallTable()
    keep = {table.add(i, deadline=float(i)): i for i in range(50)}
    for i in range(10_000):
        table.discard(table.add(-i, deadline=0.5))
    assert len(table._heap) <= 2 * len(table) + 65
    assert sorted(table.ids()) == sorted(keep)
    assert table.next_deadline() == 0.0
    assert dict(table.expire(24.0)) == {r: w for r, w in keep.items() if w <= 24}


# -- CallTable against a model ---------------------------------------------------------


class CallTableModel:
    """What ``CallTable`` should do, written the obvious way."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.calls: dict[int, tuple[float, Any]] = {}
        self.issued: list[int] = []
        self.late = 0
        self.expired = 0

    def add(self, rid: int | None, waiter: Any, deadline: float) -> None:
        """Record an add; ``rid`` is None when the table refused (full)."""
        if len(self.calls) >= self.max_pending:
            assert rid is None, "add() must refuse when max_pending calls are pending"
            return
        assert rid is not None, "add() refused although there was room"
        assert not self.issued or rid > self.issued[-1], "ids must increase"
        self.issued.append(rid)
        self.calls[rid] = (deadline, waiter)

    def pop(self, rid: int) -> Any:
        if rid not in self.calls:
            self.late += 1
            return None
        return self.calls.pop(rid)[1]

    def discard(self, rid: int) -> Any:
        entry = self.calls.pop(rid, None)
        return None if entry is None else entry[1]

    def expire(self, now: float) -> list[tuple[int, Any]]:
        due = sorted(rid for rid, (d, _) in self.calls.items() if d <= now)
        out = [(rid, self.calls.pop(rid)[1]) for rid in due]
        self.expired += len(out)
        return out

    def next_deadline(self) -> float | None:
        return min((d for d, _ in self.calls.values()), default=None)


def check_same(table: CallTable[Any], model: CallTableModel) -> None:
    assert len(table) == len(model.calls)
    assert table.ids() == list(model.calls)
    assert table.late_replies == model.late
    assert table.expired == model.expired
    assert table.next_deadline() == model.next_deadline()


def add_to_both(table: CallTable[Any], model: CallTableModel, waiter: Any, deadline: float) -> int | None:
    try:
        rid: int | None = table.add(waiter, deadline)
    except OverloadedError:
        rid = None
    else:
        # Stale heap entries are bounded: add() compacts when the heap outgrows the calls.
        assert len(table._heap) <= 2 * len(table) + 64
    model.add(rid, waiter, deadline)
    return rid


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_the_model(seed: int) -> None:
    rng = random.Random(seed)
    max_pending = rng.choice([1, 5, 50, 300])
    table: CallTable[object] = CallTable(max_pending=max_pending)
    model = CallTableModel(max_pending)
    now = 0.0
    compactions = 0
    compact = table._compact

    def counting_compact() -> None:
        nonlocal compactions
        compactions += 1
        compact()

    table._compact = counting_compact  # type: ignore[method-assign]
    for step in range(6000):
        op = rng.random()
        if op < 0.01:
            # A burst of calls answered in time, with far deadlines: their heap entries
            # go stale and stay until compaction.
            for _ in range(rng.randint(50, 800)):
                if len(model.calls) >= max_pending:  # make room: abandon the oldest call
                    oldest = next(iter(model.calls))
                    assert table.discard(oldest) is model.discard(oldest)
                rid = add_to_both(table, model, object(), now + 100 + rng.random())
                if rid is not None and rng.random() < 0.98:
                    assert table.pop(rid) is model.pop(rid)
        elif op < 0.4:
            add_to_both(table, model, object(), now + rng.choice([0.0, 0.5, 1.0, 2.0, rng.random() * 5]))
        elif op < 0.6:
            rid = rng.choice(model.issued) if model.issued and rng.random() < 0.9 else rng.randrange(1, 10**6)
            assert table.pop(rid) is model.pop(rid)
        elif op < 0.75:
            rid = rng.choice(model.issued) if model.issued else 1
            assert table.discard(rid) is model.discard(rid)
        elif op < 0.95:
            now += rng.choice([0.0, 0.1, 0.5, 1.0])
            assert sorted(table.expire(now), key=lambda e: e[0]) == model.expire(now)
        elif op < 0.999:
            assert table.next_deadline() == model.next_deadline()
        else:
            assert sorted(table.drain(), key=lambda e: e[0]) == sorted(
                ((r, w) for r, (_, w) in model.calls.items()), key=lambda e: e[0]
            )
            model.calls.clear()
        if step % 10 == 0:
            check_same(table, model)
    check_same(table, model)
    assert compactions > 0, "the run never compacted the heap; the test does not cover it"


_deadlines = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 10.0])


class CallTableMachine(RuleBasedStateMachine):
    """Hypothesis drives ``CallTable`` and the model side by side."""

    pending = Bundle("pending")

    def __init__(self) -> None:
        super().__init__()
        self.table: CallTable[object] = CallTable(max_pending=8)
        self.model = CallTableModel(max_pending=8)
        self.now = 0.0

    @rule(target=pending, deadline=_deadlines)
    def add(self, deadline: float) -> int:
        rid = add_to_both(self.table, self.model, object(), self.now + deadline)
        return rid if rid is not None else 10**9  # a refused add yields an id nobody has

    @rule(rid=consumes(pending))
    def reply(self, rid: int) -> None:
        assert self.table.pop(rid) is self.model.pop(rid)

    @rule(rid=pending)
    def late_or_duplicate_reply(self, rid: int) -> None:
        assert self.table.pop(rid) is self.model.pop(rid)

    @rule(rid=st.integers(0, 2**63 - 1))
    def made_up_reply(self, rid: int) -> None:
        assert self.table.pop(rid) is self.model.pop(rid)

    @rule(rid=consumes(pending))
    def abandon(self, rid: int) -> None:
        assert self.table.discard(rid) is self.model.discard(rid)

    @rule(step=st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]))
    def timer(self, step: float) -> None:
        self.now += step
        assert sorted(self.table.expire(self.now), key=lambda e: e[0]) == self.model.expire(self.now)

    @rule(n=st.integers(1, 80), deadline=_deadlines)
    def burst_answered_in_time(self, n: int, deadline: float) -> None:
        """Many calls answered at once: stale heap entries pile up until compaction."""
        for _ in range(n):
            rid = add_to_both(self.table, self.model, object(), self.now + deadline)
            if rid is not None:
                assert self.table.pop(rid) is self.model.pop(rid)

    @invariant()
    def same_as_model(self) -> None:
        check_same(self.table, self.model)


CallTableMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, database=None
)
test_call_table_state_machine = CallTableMachine.TestCase


# -- Admission ---------------------------------------------------------------------


def test_admission_verdicts_and_counts() -> None:
    adm: Admission[str] = Admission(max_active=2, max_queued=2)
    verdicts = [adm.offer(x) for x in "abcdef"]
    assert verdicts == [Verdict.START] * 2 + [Verdict.QUEUED] * 2 + [Verdict.REJECTED] * 2
    assert (adm.active, adm.queued, adm.rejected) == (2, 2, 2)


def test_admission_finish_hands_over_in_order() -> None:
    adm: Admission[int] = Admission(max_active=1, max_queued=3)
    assert [adm.offer(i) for i in range(4)] == [Verdict.START] + [Verdict.QUEUED] * 3
    assert adm.finish() == 1  # 0 ended; 1 now counts as active
    assert (adm.active, adm.queued) == (1, 2)
    assert adm.offer(4) is Verdict.QUEUED
    assert [adm.finish() for _ in range(3)] == [2, 3, 4]
    assert (adm.active, adm.queued) == (1, 0)
    assert adm.finish() is None
    assert adm.active == 0
    assert adm.offer(5) is Verdict.START


def test_admission_with_no_queue() -> None:
    adm: Admission[str] = Admission(max_active=1, max_queued=0)
    assert adm.offer("a") is Verdict.START
    assert adm.offer("b") is Verdict.REJECTED
    assert adm.finish() is None
    assert adm.offer("c") is Verdict.START
    assert adm.rejected == 1


def test_admission_remove() -> None:
    adm: Admission[tuple[str, int]] = Admission(max_active=1, max_queued=5)
    adm.offer(("p", 0))
    for item in [("p", 1), ("q", 1), ("p", 2), ("q", 2)]:
        assert adm.offer(item) is Verdict.QUEUED
    assert adm.remove(lambda j: j == ("q", 1)) == ("q", 1)
    assert adm.remove(lambda j: j == ("q", 1)) is None
    assert adm.remove(lambda j: j[0] == "p") == ("p", 1)  # the first match only
    assert adm.remove(lambda j: j == ("p", 0)) is None  # the running one is not queued
    assert (adm.active, adm.queued) == (1, 2)
    assert adm.finish() == ("p", 2)
    assert adm.finish() == ("q", 2)
    assert adm.finish() is None
    assert adm.active == 0


def test_admission_remove_takes_out_the_item_it_returns() -> None:
    # Two queued items that compare equal but are distinct objects: ``remove`` must take
    # out of the queue the very item its predicate accepted (and returns), not another one.
    adm: Admission[list[int]] = Admission(max_active=1, max_queued=3)
    adm.offer([0])
    first, second = [1], [1]
    adm.offer(first)
    adm.offer(second)
    taken = adm.remove(lambda j: j is second)
    assert taken is second
    assert adm.queued == 1
    assert adm.finish() is first, "remove() returned `second` but left it queued and dropped `first`"


def test_admission_take_queued() -> None:
    adm: Admission[str] = Admission(max_active=1, max_queued=3)
    for x in "abcd":
        adm.offer(x)
    assert adm.take_queued() == ["b", "c", "d"]
    assert (adm.active, adm.queued) == (1, 0)
    assert adm.take_queued() == []
    assert adm.finish() is None
    assert adm.active == 0


@pytest.mark.parametrize(("max_active", "max_queued"), [(0, 1), (-1, 0), (1, -1)])
def test_admission_limits_validated(max_active: int, max_queued: int) -> None:
    with pytest.raises(ValueError, match="max_active"):
        Admission(max_active, max_queued)


@pytest.mark.parametrize("seed", range(4))
def test_admission_random_model(seed: int) -> None:
    rng = random.Random(seed)
    max_active, max_queued = rng.randint(1, 4), rng.randint(0, 4)
    adm: Admission[int] = Admission(max_active, max_queued)
    active = 0
    queue: list[int] = []
    rejected = 0
    for item in range(3000):
        op = rng.random()
        if op < 0.5:
            verdict = adm.offer(item)
            if active < max_active:
                active += 1
                assert verdict is Verdict.START
            elif len(queue) < max_queued:
                queue.append(item)
                assert verdict is Verdict.QUEUED
            else:
                rejected += 1
                assert verdict is Verdict.REJECTED
        elif op < 0.85 and active:
            handed_over = queue.pop(0) if queue else None
            if handed_over is None:
                active -= 1
            assert adm.finish() == handed_over
        elif op < 0.97 and queue:
            target = rng.choice(queue)
            assert adm.remove(lambda j, t=target: j == t) == target
            queue.remove(target)
        elif op >= 0.97:
            assert adm.take_queued() == queue
            queue = []
        assert (adm.active, adm.queued, adm.rejected) == (active, len(queue), rejected)
