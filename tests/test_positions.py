"""Acknowledgements: a position is saved only once every batch read before it is delivered."""
from __future__ import annotations

from logpipe.positions import AckTracker, Positions


def test_a_position_waits_for_every_earlier_batch_of_its_source(tmp_path):
    positions = Positions(tmp_path / "positions.yaml")
    tracker = AckTracker(positions)
    first = tracker.ticket("file-a", {"file-a": "100"}, sinks=2)
    second = tracker.ticket("file-a", {"file-a": "200"}, sinks=2)
    other = tracker.ticket("file-b", {"file-b": "7"}, sinks=1)
    second.done()
    second.done()
    other.done()
    assert positions.get("file-a") is None  # the first batch is not delivered yet
    assert positions.get("file-b") == "7"  # another source does not wait for it
    first.done()
    assert positions.get("file-a") is None  # one of two sinks still holds it
    first.done()
    assert positions.get("file-a") == "200"
    assert tracker.pending() == 0


def test_sources_that_are_done_leave_nothing_behind(tmp_path):
    """Files rotate away by the thousand over weeks: each is its own source of tickets, and
    none may keep memory once its batches are delivered."""
    tracker = AckTracker(Positions(tmp_path / "positions.yaml"))
    for i in range(5000):
        tracker.ticket(f"file-{i}", {f"file-{i}": "1"}, sinks=1).done()
    assert tracker.pending() == 0
    assert not tracker._pending  # no queue kept per released source
    again = tracker.ticket("file-1", {"file-1": "2"}, sinks=1)  # a source that comes back works as before
    assert tracker.pending() == 1
    again.done()
    assert tracker.pending() == 0
