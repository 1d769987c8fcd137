"""A target's mailbox merges what arrives into one request and hands it out when due."""

from __future__ import annotations

import threading
import time

from orgsync.daemon.queue import MAX_TARGETED_PEOPLE, Mailbox, SyncRequest


def people(*emails: str) -> SyncRequest:
    return SyncRequest("webhook:generic", emails=frozenset(emails))


class TestMerge:
    def test_targeted_requests_add_up_their_people(self) -> None:
        merged = people("a@x").merge(SyncRequest("webhook:okta", source_ids=frozenset({"00u1"})))
        assert (set(merged.emails), set(merged.source_ids)) == ({"a@x"}, {"00u1"})
        assert merged.trigger == "webhook:generic"

    def test_a_full_reconcile_absorbs_targeted_ones_from_either_side(self) -> None:
        full = SyncRequest("schedule")
        assert people("a@x").merge(full) == full
        # Remembered: another replica's earlier reconcile does not stand for these people.
        assert people("a@x").merge(full).absorbed
        assert full.merge(people("a@x")).absorbed
        assert not full.merge(SyncRequest("schedule")).absorbed
        assert full.merge(people("a@x")) == full

    def test_too_many_people_become_a_full_reconcile(self) -> None:
        many = SyncRequest("w", emails=frozenset(f"p{i}@x" for i in range(MAX_TARGETED_PEOPLE)))
        assert many.merge(people("one-more@x")).full

    def test_the_queue_rows_served_add_up_whatever_absorbs_what(self) -> None:
        """Every webhook queue row merged into a run is marked done after it: a full
        reconcile absorbing targeted requests serves their rows too, and so does a
        request widened for naming too many people."""
        queued = SyncRequest("webhook:generic", emails=frozenset({"a@x"}), queued=frozenset("1"))
        full = SyncRequest("schedule")
        assert full.merge(queued).queued == {"1"}
        assert queued.merge(full).queued == {"1"}
        assert queued.merge(full).full
        other = SyncRequest("webhook:okta", source_ids=frozenset({"u"}), queued=frozenset("2"))
        assert queued.merge(other).queued == {"1", "2"}
        many = SyncRequest(
            "w",
            emails=frozenset(f"p{i}@x" for i in range(MAX_TARGETED_PEOPLE)),
            queued=frozenset("3"),
        )
        widened = many.merge(queued)
        assert widened.full and widened.queued == {"1", "3"}
        assert widened.widened().queued == {"1", "3"}


class TestMailbox:
    def test_a_burst_of_debounced_requests_is_handed_out_once(self) -> None:
        box = Mailbox(debounce=0.2)
        for i in range(100):
            box.put(people(f"p{i}@x"), debounce=True)
        started = time.monotonic()
        request = box.take()
        assert request is not None
        assert len(request.emails) == 100
        assert time.monotonic() - started >= 0.15  # waited for the quiet period
        assert box.pending() is None
        assert box.received == 100

    def test_undebounced_work_is_due_at_once(self) -> None:
        box = Mailbox(debounce=5)
        box.put(SyncRequest("schedule"))
        started = time.monotonic()
        assert box.take() == SyncRequest("schedule")
        assert time.monotonic() - started < 0.5

    def test_a_steady_stream_cannot_postpone_work_beyond_max_wait(self) -> None:
        box = Mailbox(debounce=0.2, max_wait=0.5)
        stop = threading.Event()

        def drip() -> None:
            while not stop.wait(0.05):
                box.put(people("a@x"), debounce=True)

        box.put(people("a@x"), debounce=True)
        dripper = threading.Thread(target=drip)
        dripper.start()
        started = time.monotonic()
        try:
            assert box.take() is not None
        finally:
            stop.set()
            dripper.join()
        assert time.monotonic() - started < 1.5

    def test_not_before_holds_work_back(self) -> None:
        box = Mailbox()
        box.put(SyncRequest("schedule"))
        started = time.monotonic()
        assert box.take(not_before=started + 0.3) is not None
        assert time.monotonic() - started >= 0.25

    def test_a_delay_keeps_a_request_back_and_merges_what_comes_meanwhile(self) -> None:
        box = Mailbox()
        box.put(people("a@x"), delay=0.3)
        box.put(people("b@x"))
        started = time.monotonic()
        request = box.take()
        assert request is not None
        assert request.emails == {"a@x", "b@x"}
        assert time.monotonic() - started >= 0.25

    def test_close_wakes_the_taker_and_drops_pending_work(self) -> None:
        box = Mailbox()
        taken: list[SyncRequest | None] = []
        taker = threading.Thread(target=lambda: taken.append(box.take()))
        taker.start()
        time.sleep(0.05)
        box.close()
        taker.join(2)
        assert taken == [None]
        box.put(SyncRequest("schedule"))
        assert box.pending() is None
