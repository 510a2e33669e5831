"""What every ``atp`` command module shares: consoles, error handling, settings, progress bars."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from core import redact
from core.config import Settings, load_settings
from core.errors import AtpError

# soft_wrap: messages stay one line each when piped (greppable, file:line: message).
console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)
P = ParamSpec("P")
R = TypeVar("R")
_loaded: list[Settings] = []  # the settings the command runs with, to name a service that stops answering


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected errors into one clear line and exit code 2, and Ctrl-C into exit code 130.

    Kafka or Redis failing in the middle of a command (the checks at its start catch a service that
    is down before it begins) is expected too: one line naming the service, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except AtpError as exc:
            err.print("error:", str(exc), style="red", markup=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            line = service_failure(exc)
            if line is None:
                raise
            err.print("error:", line, style="red", markup=False)
            raise typer.Exit(2) from None

    return wrapper


def service_failure(exc: BaseException) -> str | None:
    """The line for a Kafka or Redis client error (None for anything else: a bug keeps its traceback)."""
    s = _loaded[-1] if _loaded else None
    module = type(exc).__module__
    if module.startswith("redis."):
        import redis

        url = redact.url(s.redis_url) if s is not None else "ATP_REDIS_URL"
        why = redact.text(str(exc))
        if isinstance(exc, redis.exceptions.AuthenticationError):
            return (f"Redis at {url} refused the credentials ({why}): check the password in ATP_REDIS_URL "
                    "or ATP_REDIS_PASSWORD_FILE")
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return f"cannot reach Redis at {url} ({why}); start the local stack with `atp stack up` or set ATP_REDIS_URL"
        return None
    if module == "cimpl" or module.startswith("confluent_kafka"):
        from confluent_kafka import KafkaError, KafkaException

        if not isinstance(exc, KafkaException):
            return None
        error = exc.args[0] if exc.args else None
        why = error.str() if isinstance(error, KafkaError) else str(exc)
        bootstrap = s.kafka_bootstrap if s is not None else "ATP_KAFKA_BOOTSTRAP"
        if isinstance(error, KafkaError) and error.code() in (
                KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
                KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT):
            from core.kafka_config import unreachable

            return unreachable(bootstrap, why)
        return f"Kafka at {redact.text(bootstrap)} refused the request: {why}"
    return None


def progress_bar(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True)


def settings() -> Settings:
    from core import logs

    logs.setup()
    loaded = load_settings()
    _loaded[:] = [loaded]
    return loaded
