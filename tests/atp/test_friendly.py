"""A broker or Redis that stops answering in the middle of a command ends it with one line that names
the service (password hidden) and exit code 2; any other exception keeps its traceback."""

from __future__ import annotations

import pytest
import redis
import typer
from confluent_kafka import KafkaError, KafkaException

from atp.cli import common
from core.config import load_settings


@pytest.fixture
def loaded(monkeypatch):
    s = load_settings({"ATP_REDIS_URL": "redis://:pw-secret@127.0.0.1:6390/0", "ATP_KAFKA_BOOTSTRAP": "k1:9092"})
    monkeypatch.setattr(common, "_loaded", [s])
    return s


def ends_with(exc: BaseException, capsys) -> tuple[int, str]:
    @common.friendly
    def command() -> None:
        raise exc

    with pytest.raises(typer.Exit) as ended:
        command()
    return ended.value.exit_code, capsys.readouterr().err


@pytest.mark.parametrize("exc, says", [
    (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused."),
     "cannot reach Redis at redis://:***@127.0.0.1:6390/0 (Error 111"),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), "cannot reach Redis at redis://:***@127.0.0.1:6390/0"),
    (redis.exceptions.AuthenticationError("invalid password"), "refused the credentials"),
    (KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata")),
     "cannot reach Kafka at k1:9092 (Failed to get metadata); start the local stack"),
    (KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed")),
     "Kafka at k1:9092 refused the request: not allowed"),
])
def test_a_service_failing_mid_command_is_one_line_and_exit_2(loaded, capsys, exc, says):
    code, text = ends_with(exc, capsys)
    assert code == 2
    assert len(text.strip().splitlines()) == 1 and says in text, text
    assert "pw-secret" not in text and "Traceback" not in text


def test_anything_else_keeps_its_traceback(loaded):
    @common.friendly
    def command() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        command()
    with pytest.raises(redis.exceptions.ResponseError):  # Redis answered: not a service that is down
        common.friendly(lambda: (_ for _ in ()).throw(redis.exceptions.ResponseError("WRONGTYPE")))()
