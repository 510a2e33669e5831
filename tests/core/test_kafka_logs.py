"""librdkafka's lines go through logging, each message at most once per window, with a count of the rest."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from core import kafka_logs
from core.config import load_settings
from core.kafka_config import client_config, security_config
from core.kafka_logs import LOGGER, Repeats
from sandbox.child import ROOT

CONNECT = "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: " \
          "Connection refused (after {ms}ms in state CONNECT)"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def said(repeats: Repeats, text: str, client: str = "rdkafka#consumer-1", level: int = logging.ERROR,
         facility: str = "FAIL") -> str | None:
    """What a record confluent-kafka makes (``log(level, "%s [%s] %s", fac, name, buf)``) becomes: its
    message, or None when it is held back."""
    record = logging.LogRecord("librdkafka", level, __file__, 0, "%s [%s] %s", (facility, client, text), None)
    return record.getMessage() if repeats.filter(record) else None


def test_a_message_repeated_by_many_clients_is_logged_once_per_window_then_says_how_often():
    clock = Clock()
    repeats = Repeats(window_s=30, clock=clock)
    out = []
    for i in range(300):  # ten times a second from three clients, for 10 s
        clock.now = i / 30
        out.append(said(repeats, CONNECT.format(ms=i % 7), client=f"rdkafka#consumer-{i % 3}"))
    shown = [m for m in out if m is not None]
    assert shown == [f"FAIL [rdkafka#consumer-0] {CONNECT.format(ms=0)}"]
    clock.now = 31.0
    again = said(repeats, CONNECT.format(ms=100), client="rdkafka#consumer-2")
    assert again == (f"FAIL [rdkafka#consumer-2] {CONNECT.format(ms=100)} "
                     "(said 299 more time(s) by 3 client(s) since it was last logged)")
    assert said(repeats, CONNECT.format(ms=3)) is None  # a new window has begun


def test_different_news_is_not_held_back():
    repeats = Repeats(window_s=30, clock=Clock())
    assert said(repeats, CONNECT.format(ms=0)) is not None
    assert said(repeats, CONNECT.format(ms=0).replace("127.0.0.1:9", "127.0.0.2:9")) is not None  # another broker
    assert said(repeats, "[thrd:main]: 127.0.0.1:9/1: Disconnected (after 5ms in state UP)") is not None
    assert said(repeats, CONNECT.format(ms=0), level=logging.WARNING) is not None
    assert said(repeats, CONNECT.format(ms=0), facility="ERROR") is not None
    plain = logging.LogRecord("librdkafka", logging.INFO, __file__, 0, "no arguments", None, None)
    assert repeats.filter(plain) and repeats.filter(plain)  # not confluent-kafka's shape: untouched


def test_it_forgets_the_oldest_messages_beyond_its_bound():
    repeats = Repeats(window_s=30, clock=Clock(), max_messages=2)
    for broker in ("a:1", "b:1", "c:1"):
        assert said(repeats, f"{broker}/bootstrap: Connect failed") is not None
    assert said(repeats, "a:1/bootstrap: Connect failed") is not None  # forgotten, so new again
    assert said(repeats, "c:1/bootstrap: Connect failed") is None


def test_every_client_configuration_carries_the_logger():
    s = load_settings({})
    assert client_config(s)["logger"] is LOGGER
    assert security_config(s)["logger"] is LOGGER  # what the flow's Bytewax source and sink take
    assert kafka_logs.REPEATS in LOGGER.filters


def test_a_consumer_with_no_broker_writes_its_lines_through_logging_once_each(tmp_path):
    # A real librdkafka consumer polled for 3 s against a port where nothing listens: without the
    # logger it writes a "Connect ... failed" line to stderr every few hundred ms.
    script = textwrap.dedent("""
        import logging, sys, time
        from confluent_kafka import Consumer
        from core.config import load_settings
        from core.kafka_config import client_config
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(name)s %(message)s")
        s = load_settings({"ATP_KAFKA_BOOTSTRAP": sys.argv[1]})
        c = Consumer(client_config(s, {"group.id": "g", "reconnect.backoff.max.ms": 100}))
        c.subscribe(["t"])
        end = time.monotonic() + 3
        while time.monotonic() < end:
            c.poll(0.1)
        c.close()
    """)
    from sandbox.stack import free_port

    out = subprocess.run([sys.executable, "-c", script, f"127.0.0.1:{free_port()}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "rdkafka" not in out.stderr  # librdkafka printed nothing itself
    lines = [line for line in out.stdout.splitlines() if line.startswith("LOG librdkafka")]
    assert any("Connect to ipv4#127.0.0.1" in line for line in lines), out.stdout
    assert len(lines) == len({line.split("(after")[0] for line in lines}), out.stdout  # each once
