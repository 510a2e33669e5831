"""The wms read progress that tells a snapshot its past is in."""

from dataflows.progress import StockProgress


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



def test_only_a_single_worker_goes_by_the_read_progress():
    from atp.config import load_settings
    from dataflows.flow import deps_from_settings
    from dataflows.progress import STOCK_PROGRESS, no_progress

    assert deps_from_settings(load_settings({})).fold.stock_progress == STOCK_PROGRESS.get
    for env in ({"ATP_WORKERS": "2"}, {"ATP_CLUSTER_ADDRESSES": "h:1;h:2", "ATP_PROCESS_ID": "1"}):
        # Workers fold what other workers read, through unbounded queues: reading says nothing.
        assert deps_from_settings(load_settings(env)).fold.stock_progress is no_progress
