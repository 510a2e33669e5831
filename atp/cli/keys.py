"""`atp keys`: API keys for the channels that read availability (create, list, revoke, rotate)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from atp.cli.common import console, err, friendly, settings

app = typer.Typer(help="API keys: who may read which locations, how often.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _expires_ms(text: str | None) -> int | None:
    if text is None:
        return None
    from core.errors import ConfigError

    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--expires {text!r}: use an ISO time, e.g. 2027-01-31T00:00:00Z") from None
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1000)


@app.command("create")
@friendly
def create(
    name: str = typer.Argument(..., help="A name for the key (letters, digits, '.', '_', '-'), e.g. the channel's"),
    scope: list[str] = typer.Option(..., "--scope", help="availability:read, drift:read, metrics:read or admin "
                                                          "(repeat for several)"),
    locations: list[str] = typer.Option(None, "--locations", help="Only these locations (comma-separated)"),
    groups: list[str] = typer.Option(None, "--groups", help="Only these location groups (comma-separated)"),
    rate: float = typer.Option(None, "--rate", help="Requests per second (a batch costs its items); "
                                                    "0: unlimited; default ATP_API_DEFAULT_RATE"),
    burst: float = typer.Option(None, "--burst", help="Requests that may come at once (default: 2 x rate)"),
    expires: str = typer.Option(None, "--expires", help="ISO time after which the key is refused"),
) -> None:
    """Create a key; its token is printed once, as the last line of standard output."""
    from serving.auth.keyfile import create as create_key
    from serving.auth.keyfile import load_secret

    s = settings()
    token = create_key(s.keys_file, load_secret(s.key_secret_file, create=True), name, scope, _split(locations),
                       _split(groups), s.api_default_rate if rate is None else rate, burst, _expires_ms(expires))
    err.print(f"created key {name!r}; its token follows and is not stored anywhere: keep it now")
    typer.echo(token)


@app.command("list")
@friendly
def list_keys() -> None:
    """Names, scopes, limits, creation and last use (never a token)."""
    from projection.client import connect
    from serving.auth.keyfile import read_records
    from serving.auth.limiter import last_used_key

    s = settings()
    records = read_records(s.keys_file)
    last: dict[bytes | str, bytes | str] = {}
    try:
        last = connect(s, socket_connect_timeout=2, socket_timeout=2).hgetall(last_used_key(s.redis_key_prefix))
    except Exception:  # noqa: BLE001 - Redis away: the list is still worth showing
        err.print("(Redis unreachable: last use unknown)")
    if not records:
        err.print(f"no API keys in {s.keys_file}: create one with `atp keys create NAME --scope availability:read`")
    for r in records.values():  # one line a key, whole (a table would cut names in a pipe), greppable
        used = last.get(r.name.encode())
        console.print(f"{r.name}  scopes={','.join(r.scopes)}  locations={','.join(r.locations or ['all'])}  "
                      f"groups={','.join(r.groups or ['all'])}  rate={f'{r.rate:g}/s' if r.rate else 'unlimited'}  "
                      f"burst={f'{r.burst:g}' if r.rate else '-'}  created={_iso(r.created_ms)}  "
                      f"expires={_iso(r.expires_ms)}  last_used={_iso(int(used)) if used else 'never'}", markup=False)


@app.command("revoke")
@friendly
def revoke(name: str = typer.Argument(..., help="The key's name")) -> None:
    """Delete a key: every API worker refuses it within about a second."""
    from serving.auth.keyfile import revoke as revoke_key

    revoke_key(settings().keys_file, name)
    console.print(f"revoked {name!r}")


@app.command("rotate")
@friendly
def rotate(
    name: str = typer.Argument(..., help="The key's name"),
    grace: float = typer.Option(3600.0, "--grace", help="Seconds the old token stays valid (0: dead at once)"),
) -> None:
    """Give a key a new token (printed once, last line); the old one works for --grace seconds more."""
    from serving.auth.keyfile import load_secret
    from serving.auth.keyfile import rotate as rotate_key

    s = settings()
    token = rotate_key(s.keys_file, load_secret(s.key_secret_file), name, grace)
    err.print(f"rotated {name!r}; the old token stays valid for {grace:g} s")
    typer.echo(token)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
