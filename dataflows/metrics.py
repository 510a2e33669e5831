"""The dataflow's Prometheus metrics (names are fixed: dashboards use them). Never a SKU label."""

import time

from prometheus_client import Counter, Gauge, Histogram

from dataflows.hotmetrics import HotCounter, HotHistogram

# The two per-event metrics count per worker thread without a lock (see hotmetrics).
EVENTS = HotCounter(
    "atp_events_total", "Input events by topic, type and outcome (applied|duplicate|dead_letter).",
    ["topic", "event_type", "outcome"],
)
PRODUCE_ERRORS = Counter(
    "atp_produce_errors_total",
    "Output messages the producer or the broker refused (too large, invalid) or did not deliver, by topic and error.",
    ["topic", "error"],
)
TIMER_FAILURES = Counter(
    "atp_timer_failures_total", "Timers of a key that raised with no record to dead-letter (see the log), by step.", ["step"]
)
DEAD_LETTER = Counter("atp_dead_letter_total", "Messages sent to the dead-letter topic, by reason.", ["reason"])
EVENT_LAG = HotHistogram(
    "atp_event_lag_seconds", "Processing time minus occurred_at of the newest event in each published position.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
REDIS_WRITE = Histogram(
    "atp_redis_write_seconds", "Time to write one batch of positions to Redis (one pipeline).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
PUBLISHED = Counter("atp_positions_published_total", "Positions written to Redis (after per-batch coalescing).")
OVERSOLD = Gauge("atp_oversold_positions", "Keys whose AVAILABLE bucket is below zero.")
STATE_KEYS = Gauge("atp_state_keys", "sku@location keys held in dataflow state.")
LAST_EVENT = Gauge("atp_last_event_timestamp_seconds", "Newest occurred_at applied, as Unix time.")
KEYSPACE_LOST = Counter(
    "atp_keyspace_lost_total", "Times Redis lost the keyspace and the dataflow restarted to re-publish it.")
INPUT_OFFSET = Gauge(
    "atp_input_offset", "Next offset to read per input partition (what this process has consumed).",
    ["topic", "partition"],
)
REPLAY_EVENTS = Counter("atp_replay_events_total", "Input records a replay has read within its range.")
REPLAY_LAG = Gauge("atp_replay_lag_events", "Input records a replay still has to read to reach its end offsets.")
LATE_EVENTS = Counter(
    "atp_late_events_total", "Events older than the lateness window when they arrived (applied at the window's edge).",
    ["topic"],
)
RESERVATIONS_EXPIRED = Counter("atp_reservations_expired_total", "Order lines released because expires_at passed.")
RECONCILIATIONS = Counter(
    "atp_reconciliations_total", "Snapshots compared with the stream, by outcome (match|drift|unverifiable).",
    ["source_system", "outcome"],
)
ALERTS = Counter(
    "atp_drift_alerts_total",
    "Alerts raised, by kind (DRIFT|OVERSOLD), severity, source system and location (the first 500 locations "
    "a process alerts for; later ones as 'other').",
    ["kind", "severity", "source_system", "location"],
)
DRIFT_UNITS = Histogram(
    "atp_drift_units", "|snapshot on-hand - stream on-hand| of each verifiable reconciliation.",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 1000),
)
LOOP_BEAT = Gauge(
    "atp_dataflow_loop_timestamp_seconds",
    "When the dataflow's main loop last asked its input for records or waited on an output (Unix time, set at "
    "most once a second): the heartbeat of the flow itself, not of a side thread; 0 while a run starts.",
)
_BEAT = [0.0]  # when LOOP_BEAT was last set (process-wide, like the gauge)


def loop_beat() -> None:
    """Sets ``atp_dataflow_loop_timestamp_seconds`` at most once a second. Called where Bytewax's loop
    asks a partition for records (with input or without) and where an output waits for Kafka or
    Redis (an outage is waited for, and has alerts of its own): a loop that stops there (a step stuck
    in a call, a deadlock) stops this clock while every side thread still answers."""
    now = time.time()
    if now - _BEAT[0] >= 1.0:
        _BEAT[0] = now
        LOOP_BEAT.set(now)


def loop_beat_reset() -> None:
    """A run starting again in the same process: 0 until its loop turns (resuming may take a while)."""
    _BEAT[0] = 0.0
    LOOP_BEAT.set(0)
CRASHES = Gauge(
    "atp_dataflow_crashes",
    "Crashes of the dataflow counted at the input position it resumes from; 0 once the input passes where "
    "the first of them happened (dataflows/runtime/crashguard.py).",
)
CAREFUL_MODE = Gauge("atp_dataflow_careful_mode", "1 while a crash loop has the dataflow read one record at a time.")
BAND_CHANGES = Counter("atp_band_changes_total", "Threshold-feed events, by the band entered.", ["band"])
MALLOC_TRIM = Histogram(
    "atp_malloc_trim_seconds", "Each malloc_trim call that hands the heap's free pages back to the OS (core.memtrim).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
