"""The ATP dataflow. ``build_flow`` takes its sources and sinks so tests can run it on TestingSource."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeGuard, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition

from core.config import DriftLevels, Settings
from dataflows.controls import LocationDirectory, is_location_control, skus_by_location
from dataflows.decode import DecodeStep, TimeRules, is_dead_letter
from dataflows.groups import GroupLogic, ToGroups
from dataflows.guard import guarded
from dataflows.kafka import Bounds
from dataflows.kafka import output as kafka_output
from dataflows.kafka import source as kafka_source
from dataflows.kafka.progress import STOCK_PROGRESS, no_progress
from dataflows.location_demand import DemandMetrics, location_demand
from dataflows.logic import FoldContext, PositionLogic
from dataflows.redis_sink import RedisPositionSink
from projection.client import security_options
from projection.keys import keyspace_of
from schemas import Decoder, Encoder, default_store
from schemas.codec import registry_client
from state import events as ev
from state.bands import BandChange
from state.drift import Alert, DriftPolicy, Level, Thresholds
from state.groups import GroupPosition, Groups
from state.position import Position
from state.safety import SafetyStock

FLOW_ID = "atp"


@dataclass(frozen=True)
class FlowIO:
    """Where the flow reads and writes; production uses Kafka and Redis, tests use Testing*."""

    source: Source[Any]
    positions: Sink[Position | Alert | GroupPosition]  # the Redis projection: positions, groups, latest alerts
    messages: Sink[Any]  # KafkaSinkMessage: availability feed, alerts, band changes, dead letters
    demand: Sink[Any] = field(default_factory=DemandMetrics)  # closed per-location demand windows


@dataclass(frozen=True)
class FlowDeps:
    decode: DecodeStep
    fold: FoldContext
    availability: kafka_output.RecordMessage
    alert: kafka_output.RecordMessage
    band: kafka_output.RecordMessage
    dead_letter: kafka_output.DeadLetterMessage
    demand_lateness: timedelta = timedelta(seconds=60)
    controls_topic: str = "atp.controls.v1"  # for the event counters
    to_groups: ToGroups = field(default_factory=lambda: ToGroups(Groups({})))


def _is_position(item: object) -> TypeGuard[Position]:
    return type(item) is Position


def _is_alert(item: object) -> TypeGuard[Alert]:
    return type(item) is Alert


def build_flow(io: FlowIO, deps: FlowDeps) -> Dataflow:
    # Step ids are part of recovery state: renaming one is a migration.
    flow = Dataflow(FLOW_ID)
    msgs = op.input("kafka_in", flow, io.source)
    routed = op.flat_map_batch("decode", msgs, deps.decode)
    split = op.branch("split_dead_letters", routed, is_dead_letter)
    # Bytewax types what a branch's predicate refuses as its whole input; here, the events.
    events = cast("Stream[tuple[str, ev.Event]]", split.falses)
    # Location-wide safety-stock controls reach every key of their location through a directory.
    scopes = op.branch("split_location_controls", events, is_location_control)
    seen = op.flat_map_batch("skus_by_location", scopes.falses, skus_by_location)
    directory_in = op.merge("directory_input", seen, scopes.trues)
    topic = deps.controls_topic
    copies = op.stateful_batch("location_directory", directory_in, lambda resume: LocationDirectory(topic, resume))
    fold_in = op.merge("fold_input", scopes.falses, op.key_rm("location_controls", copies))
    fold = deps.fold
    outputs = op.stateful_batch("atp_fold", fold_in, lambda resume: PositionLogic(fold, resume))
    plain = op.key_rm("positions", outputs)
    kinds = op.branch("split_positions", plain, _is_position)
    notices = op.branch("split_alerts", kinds.falses, _is_alert)
    refused = op.branch("split_refused", notices.falses, is_dead_letter)  # the rest are band changes
    # Location groups: each position also moves its groups' sums (nothing when none are configured).
    members = op.flat_map_batch("group_members", kinds.trues, deps.to_groups)
    groups = op.key_rm("group_positions", op.stateful_batch("group_fold", members, GroupLogic))
    op.output("redis_out", op.merge("redis_items", kinds.trues, notices.trues, groups), io.positions)
    # An output that fails to encode is a dead letter too (the fold keeps figures in range, so this
    # is for the errors nobody foresaw): one bad item never stops the flow.
    dead_msg = deps.dead_letter
    feed = op.flat_map("availability_message", kinds.trues, guarded("availability_message", deps.availability, dead_msg))
    alerts = op.flat_map("alert_message", notices.trues, guarded("alert_message", deps.alert, dead_msg))
    band_changes = cast("Stream[BandChange]", refused.falses)  # what the three branches left (see above)
    bands = op.flat_map("band_message", band_changes, guarded("band_message", deps.band, dead_msg))
    dead = op.map("dead_letter_message", op.merge("dead_letters", split.trues, refused.trues), dead_msg)
    op.output("kafka_out", op.merge("kafka_messages", feed, alerts, bands, dead), io.messages)
    op.output("demand_out", location_demand(events, deps.demand_lateness), io.demand)
    return flow


def _no_watermark() -> int | None:
    return None


def deps_from_settings(settings: Settings, formula: int | None = None,
                       watermark: Callable[[], int | None] = _no_watermark) -> FlowDeps:
    store = default_store()
    registry = registry_client(settings.schema_registry_url) if settings.schema_registry_url else None
    topic_of = {
        ev.WarehouseEvent: settings.topic_wms,
        ev.OrderLineEvent: settings.topic_orders,
        ev.InventorySnapshot: settings.topic_snapshots,
        ev.SafetyStockSet: settings.topic_controls,
    }
    encoder = Encoder(store, registry)
    return FlowDeps(
        decode=DecodeStep(Decoder(store, registry), settings.input_topics,
                          times=TimeRules(int(settings.max_clock_skew_s * 1000), settings.earliest_event_ms)),
        fold=FoldContext(
            settings.dedup_window_ms, SafetyStock.from_file(settings.safety_stock_file), topic_of,
            formula=formula or settings.formula_version or 1, lateness_ms=settings.lateness_ms,
            drift=drift_policy(settings), reconcile_delay_ms=int(settings.reconcile_delay_s * 1000),
            reconcile_timeout_ms=int(settings.reconcile_timeout_s * 1000),
            out_of_order_ms=int(settings.wms_out_of_order_s * 1000),
            low_stock_atp=settings.low_stock_atp,
            stock_progress=STOCK_PROGRESS.get if settings.workers_total == 1 else no_progress),
        availability=kafka_output.FeedMessage(encoder, settings.topic_availability, watermark),
        alert=kafka_output.RecordMessage(encoder, "DriftAlert", settings.topic_drift_alerts),
        band=kafka_output.RecordMessage(encoder, "AvailabilityThreshold", settings.topic_thresholds),
        dead_letter=kafka_output.DeadLetterMessage(settings.topic_dead_letter),
        demand_lateness=timedelta(seconds=settings.demand_lateness_s),
        controls_topic=settings.topic_controls,
        to_groups=ToGroups(Groups.of(settings.location_groups)),
    )


class _Discard(DynamicSink[Any]):
    """A replay rebuilds Redis only: re-sending the availability feed, the alerts, the band changes
    and every dead letter of the whole log would flood their consumers with copies."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DiscardPartition:
        return _DiscardPartition()


class _DiscardPartition(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


def production_flow(settings: Settings, formula: int | None = None, replay: Bounds | None = None,
                    watermark: Callable[[], int | None] = _no_watermark) -> Dataflow:
    """The live flow; a replay reads its bounds, ends there and writes Redis only. ``watermark`` gives
    the pipeline's watermark the availability feed carries (runtime/watermark.py works it out)."""
    io = FlowIO(
        source=kafka_source.source(settings, bounds=replay),
        positions=RedisPositionSink(settings.redis_url, keyspace_of(settings), settings.redis_retry_s,
                                    cluster=settings.redis_cluster, options=security_options(settings)),
        messages=_Discard() if replay is not None else kafka_output.sink(settings),
    )
    return build_flow(io, deps_from_settings(settings, formula, watermark))


def main_flow() -> Dataflow:
    """Zero-argument entry for ``python -m bytewax.run "dataflows.flow:main_flow()"``."""
    from core.config import load_settings

    return production_flow(load_settings())


def drift_policy(settings: Settings) -> DriftPolicy:
    """The drift thresholds and actions of the settings: a location's own levels, else the global ones."""

    def levels(o: DriftLevels) -> Thresholds:
        def pick(name: str) -> Any:
            own = getattr(o, name)
            return getattr(settings, f"drift_{name}") if own is None else own

        return Thresholds(Level(pick("warning_units"), pick("warning_pct")),
                          Level(pick("critical_units"), pick("critical_pct")))

    return DriftPolicy(
        default=levels(DriftLevels()),
        locations={loc: levels(o) for loc, o in settings.drift_locations.items()},
        actions={"ERP": settings.drift_action_erp, "WMS": settings.drift_action_wms},
    )
