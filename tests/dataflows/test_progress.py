"""The wms read progress that tells a snapshot its past is in."""

from dataflows.kafka.progress import StockProgress


def test_progress_is_the_slowest_partition_and_only_once_every_partition_was_read():
    p = StockProgress()
    p.reset(3)
    p.saw({0: 500, 1: 900})
    assert p.get() == 0  # partition 2 could still hold anything older
    p.saw({2: 700})
    assert p.get() == 500
    p.saw({0: 400})  # never backwards
    assert p.get() == 500
    p.saw({0: 1000})
    assert p.get() == 700
    p.reset(3)
    assert p.get() == 0


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def test_a_partition_at_the_end_of_its_log_counts_as_read_up_to_now_until_it_is_read_again():
    clock = Clock(10_000)
    p = StockProgress(clock)
    p.reset(3)
    p.saw({0: 500, 1: 900})
    p.at_end(2)  # never read, and at its end: empty, holds nothing
    assert p.get() == 500
    p.at_end(0)  # read to its end: what comes later is written later
    assert p.get() == 900
    p.at_end(1)  # every partition idle: read up to the wall clock, not beyond it
    assert p.get() == 10_000
    clock.ms = 12_000
    assert p.get() == 12_000
    p.saw({1: 15_000})  # stamped ahead of this clock: that far read, no further
    assert p.get() == 12_000
    p.reading(1)  # a record again: partition 1's newest counts again, the idle ones the clock
    assert p.get() == 12_000
    p.reading(0)
    assert p.get() == 500  # partition 0 is read again: it holds the progress back to what it had
    p.saw({0: 13_000})
    assert p.get() == 12_000  # partition 2, idle, counts up to now
    clock.ms = 20_000
    assert p.get() == 13_000
    p.reset(3)
    assert p.get() == 0
    p.at_end(0)
    p.at_end(1)
    assert p.get() == 0  # partition 2 was neither read nor seen at its end
    p.at_end(2)
    assert p.get() == 20_000


def test_a_lagging_partition_still_holds_the_progress_back():
    p = StockProgress(Clock(100_000))
    p.reset(2)
    p.at_end(0)  # quiet
    p.saw({1: 4_000})  # a backlog, read but not to its end
    assert p.get() == 4_000
    p.saw({1: 99_000, 0: 1_000})
    assert p.get() == 99_000  # the idle partition's old records do not hold it back


def test_only_a_single_worker_goes_by_the_read_progress():
    from core.config import load_settings
    from dataflows.flow import deps_from_settings
    from dataflows.kafka.progress import STOCK_PROGRESS, no_progress

    assert deps_from_settings(load_settings({})).fold.stock_progress == STOCK_PROGRESS.get
    for env in ({"ATP_WORKERS": "2"}, {"ATP_CLUSTER_ADDRESSES": "h:1;h:2", "ATP_PROCESS_ID": "1"}):
        # Workers fold what other workers read, through unbounded queues: reading says nothing.
        assert deps_from_settings(load_settings(env)).fold.stock_progress is no_progress
