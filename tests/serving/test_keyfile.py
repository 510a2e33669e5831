"""The API keys file and the keyring a running API reads it through (no Redis needed)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from serving.auth import ADMIN, AVAILABILITY_READ, DRIFT_READ, ApiKey
from serving.auth import keyring as keyring_mod
from serving.auth.keyfile import KeyFileError, create, digest, load_secret, read_records, revoke, rotate
from serving.auth.keyring import Keyring


@pytest.fixture
def files(tmp_path):
    return tmp_path / "keys.json", tmp_path / "secret"


def test_a_token_is_random_long_and_stored_only_as_a_keyed_hash(files):
    keys, secret_file = files
    secret = load_secret(secret_file, create=True)
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    tokens = {create(keys, secret, f"k{i}", [AVAILABILITY_READ]) for i in range(20)}
    assert len(tokens) == 20 and all(t.startswith("atp_") and len(t) >= 4 + 43 for t in tokens)  # 256 bits
    text = keys.read_text()
    assert not any(t in text or t[4:] in text for t in tokens)
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    stored = {r.hash for r in read_records(keys).values()}
    assert stored == {digest(secret, t) for t in tokens}
    assert stored.isdisjoint({digest(b"another-secret-of-at-least-32-chars!", t) for t in tokens})  # keyed


def test_create_refuses_what_would_be_ambiguous_or_useless(files):
    keys, secret_file = files
    secret = load_secret(secret_file, create=True)
    create(keys, secret, "shop", [AVAILABILITY_READ])
    for kwargs, words in [
        (dict(name="shop", scopes=[AVAILABILITY_READ]), "exists"),
        (dict(name="x", scopes=["availability:write"]), "unknown scope"),
        (dict(name="x", scopes=[]), "at least one"),
        (dict(name="bad name", scopes=[ADMIN]), "key name"),
        (dict(name="x", scopes=[ADMIN], locations=["DC 1"]), "--locations"),
        (dict(name="x", scopes=[ADMIN], expires_ms=1), "past"),
        (dict(name="x", scopes=[ADMIN], rate=-1), "--rate"),
    ]:
        with pytest.raises(KeyFileError, match=words):
            create(keys, secret, **kwargs)


def test_the_keyring_sees_create_revoke_and_rotate_without_a_restart(files, monkeypatch):
    keys, secret_file = files
    secret = load_secret(secret_file, create=True)
    monkeypatch.setattr(keyring_mod, "CHECK_EVERY_S", 0.0)
    ring = Keyring(keys, secret_file)
    assert ring.lookup("atp_nothing") is None
    token = create(keys, secret, "edi", [DRIFT_READ], locations=["DC-02", "DC-01"], rate=5)
    key = ring.lookup(token)
    assert key == ApiKey("edi", frozenset({DRIFT_READ}), frozenset({"DC-01", "DC-02"}), None, 5.0, 10.0, None)
    new = rotate(keys, secret, "edi", grace_s=3600)
    assert ring.lookup(new) == key and ring.lookup(token) == key  # the old one, within its grace
    newer = rotate(keys, secret, "edi", grace_s=0)
    assert ring.lookup(newer) == key and ring.lookup(new) is None  # no grace: dead at once
    assert ring.lookup(token) == key  # the first one's grace still runs
    revoke(keys, "edi")
    assert ring.lookup(newer) is None and ring.lookup(token) is None
    with pytest.raises(KeyFileError, match="no key named"):
        revoke(keys, "edi")


def test_a_rotated_out_or_expired_token_is_refused(files, monkeypatch):
    keys, secret_file = files
    secret = load_secret(secret_file, create=True)
    monkeypatch.setattr(keyring_mod, "CHECK_EVERY_S", 0.0)
    token = create(keys, secret, "temp", [ADMIN], expires_ms=keyring_mod.now_ms() + 60_000)
    ring = Keyring(keys, secret_file)
    assert ring.lookup(token) is not None
    monkeypatch.setattr(keyring_mod, "now_ms", lambda: 2**62)
    assert ring.lookup(token) is None


def test_a_damaged_keys_file_keeps_the_keys_loaded_last(files, monkeypatch, caplog):
    keys, secret_file = files
    secret = load_secret(secret_file, create=True)
    monkeypatch.setattr(keyring_mod, "CHECK_EVERY_S", 0.0)
    token = create(keys, secret, "shop", [AVAILABILITY_READ])
    ring = Keyring(keys, secret_file)
    keys.write_text("{not json")
    assert ring.lookup(token) is not None
    assert "not reloaded" in caplog.text and "restore it" in caplog.text
    with pytest.raises(KeyFileError, match="cannot be read"):
        read_records(keys)
    keys.write_text(json.dumps({"format": 1, "keys": []}))
    assert ring.lookup(token) is None


def test_location_and_group_limits():
    k = ApiKey("p", frozenset({AVAILABILITY_READ}), frozenset({"DC-01"}))
    assert k.sees("DC-01") and not k.sees("DC-02") and k.allows(AVAILABILITY_READ) and not k.allows(DRIFT_READ)
    assert k.sees_group("ONE", ["DC-01"]) and not k.sees_group("BOTH", ["DC-01", "DC-02"])
    g = ApiKey("g", frozenset({ADMIN}), None, frozenset({"EAST"}))
    assert g.sees_group("EAST", ["DC-01", "DC-02"]) and not g.sees_group("WEST", ["DC-03"]) and g.allows(DRIFT_READ)


def test_an_unreadable_keys_file_keeps_the_keys_loaded_last(files, monkeypatch, caplog):
    """A keys file the API cannot read (another user's 0600 file) must not turn every request into a
    500: the keyring keeps what it had and says why (found by a second reader)."""
    keys, secret_file = files
    secret = load_secret(secret_file, create=True)
    monkeypatch.setattr(keyring_mod, "CHECK_EVERY_S", 0.0)
    token = create(keys, secret, "shop", [AVAILABILITY_READ])
    ring = Keyring(keys, secret_file)
    real_read_text = type(keys).read_text

    def denied(self, *a, **kw):
        if self == keys:
            raise PermissionError(13, "Permission denied")
        return real_read_text(self, *a, **kw)

    monkeypatch.setattr(type(keys), "read_text", denied)
    keys.touch()  # a change the keyring notices
    assert ring.lookup(token) is not None
    assert "cannot be read (Permission denied)" in caplog.text
