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


def test_in_a_cluster_the_other_processes_partitions_count_too():
    p = StockProgress()
    p.reset(4)
    p.saw({0: 500, 2: 900})  # this process reads partitions 0 and 2
    assert p.get() == 0
    p.others_saw({1: 300, 3: 800})
    assert p.get() == 300
    p.others_saw({1: 1000, 3: 800})  # the others' newest figures replace their older ones
    assert p.get() == 500
    assert p.mine() == {0: 500, 2: 900}  # what this process tells the others: its own partitions only
