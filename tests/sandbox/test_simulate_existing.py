"""`atp simulate` on top of an existing keyspace (the README's next step after `make demo`): its
snapshots and counts start from the positions that exist, so they raise no drift and rebase
nothing, and a second run with the same seed is new traffic, not duplicates."""

from __future__ import annotations

import re

import pytest

from dataflows.kafka.admin import end_offsets
from dataflows.kafka.producer import EventProducer
from projection.generations import write_meta
from projection.keys import REBUILDING, keyspace_of
from sandbox.pace import send_paced
from sandbox.scrape import scrape, total
from sandbox.simulator import Simulator
from sandbox.stack import free_port
from tests.conftest import processed, run_atp, wait_until

pytestmark = pytest.mark.integration


def sent_by(out) -> int:
    assert out.returncode == 0, out.stdout + out.stderr
    return int(re.search(r"sent (\d+) events", out.stdout).group(1))


def test_simulate_after_the_demo_raises_no_drift_and_rebases_nothing(settings, start):
    # Snapshots still waiting for the wms topic when the traffic stops are settled after 5 s
    # (unverifiable, never drift), so the test need not wait a minute for the last ones.
    s = settings.model_copy(update={"reconcile_timeout_s": 5.0})
    flow = start("run", s=s)
    metrics = f"http://{s.metrics_host}:{s.metrics_port}/metrics"
    # The demo's traffic, as `atp demo` sends it: a seed of its own, 200 SKUs x 4 locations.
    demo = send_paced(Simulator(seed=1_767_225_600, skus=200, locations=4), EventProducer(s), 0, 5000,
                      show_progress=False)
    assert demo.failed == 0
    wait_until(lambda: processed(s) >= demo.sent, 90, "the demo's events", flow)
    sent, outs = demo.sent, []
    for _ in range(2):  # `atp simulate` as the README suggests, twice with the default seed
        outs.append(run_atp(s, "simulate", "--count", "5000", "--rate", "0"))
        sent += sent_by(outs[-1])
        wait_until(lambda: processed(s) >= sent, 90, "the simulated events", flow)
    snapshots = sum(off for key, off in end_offsets(s).items() if key.endswith(s.topic_snapshots))
    assert snapshots > 100  # enough comparisons to prove something

    def reconciled() -> dict | None:  # every snapshot compared (or, before the fix, dropped as a duplicate)
        samples = scrape(metrics)
        done = total(samples, "atp_reconciliations_total") + total(samples, "atp_events_total", event_type="SNAPSHOT",
                                                                      outcome="duplicate")
        return samples if done >= snapshots else None

    samples = wait_until(reconciled, 60, "every snapshot reconciled", flow, interval=0.5)
    rebases = total(samples, "atp_reconciliations_total", source_system="WMS", outcome="drift")
    drifts = total(samples, "atp_reconciliations_total", outcome="drift")
    alerts = total(samples, "atp_drift_alerts_total", kind="DRIFT")
    duplicates = total(samples, "atp_events_total", outcome="duplicate")
    assert (drifts, rebases, alerts, duplicates) == (0, 0, 0, 0)
    assert total(samples, "atp_reconciliations_total", outcome="match") > 0
    assert all("continuing from" in out.stdout for out in outs)  # from the demo's positions


def test_simulate_never_guesses_the_stock_it_starts_from(settings, rclient):
    gone = settings.model_copy(update={"redis_url": f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"})
    out = run_atp(gone, "simulate", "--count", "10")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "s3cret-pw" not in out.stderr + out.stdout
    assert "cannot read the positions to start from in Redis" in out.stderr and "--from-empty" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert sent_by(run_atp(gone, "simulate", "--count", "10", "--from-empty")) == 10  # told: no positions there

    write_meta(rclient, keyspace_of(settings), "a-run", REBUILDING)
    out = run_atp(settings, "simulate", "--count", "10")
    assert out.returncode == 2 and "generation 'default' is rebuilding" in out.stderr
