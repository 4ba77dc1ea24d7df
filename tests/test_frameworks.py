"""Web frameworks wired to fastdyn the way their users wire them to Redis.

Django's built-in `RedisCache` backend (settings configured in-process), cachelib's
`RedisCache` (what Flask-Caching builds on), and Flask-Session's Redis backend in a real Flask
app driven by its test client. Each test runs against a single node, against one node of a
3-node cluster ("cluster" ids), and against a real redis-server ("redis" ids) as a control.
"""
import time
from datetime import timedelta

import pytest
import redis

from resp_client import RawClient
from resp_servers import (checked_server, cluster_node, paired_servers,  # noqa: F401
                          start_fastdyn, start_redis)

django = pytest.importorskip("django")
flask = pytest.importorskip("flask")
flask_session = pytest.importorskip("flask_session")


def _ttl(server, key: bytes) -> int:
    with RawClient(server.port) as c:
        reply = c.call("TTL", key)
    assert reply[0] == "int", reply
    return reply[1]


def _keys(server) -> list:
    with RawClient(server.port) as c:
        reply = c.call("KEYS", "*")
    return sorted(item[1] for item in reply[1])


@pytest.fixture(params=["fastdyn", "cluster", "redis"])
def server(request, paired_servers):
    yield from checked_server(request, paired_servers)


# --- Django --------------------------------------------------------------------------------

def _django_cache(location):
    from django.conf import settings
    from django.test.utils import override_settings

    if not settings.configured:
        settings.configure(USE_TZ=True, CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
        django.setup()
    caches = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": location,
        "TIMEOUT": 300,
        "KEY_PREFIX": "site",
    }}
    with override_settings(CACHES=caches):
        from django.core.cache import cache

        yield cache
        cache.close()


@pytest.fixture
def django_cache(server):
    yield from _django_cache(f"redis://127.0.0.1:{server.port}")


@pytest.fixture(params=["fastdyn", "redis"])
def password_server(request, tmp_path):
    start = start_fastdyn if request.param == "fastdyn" else start_redis
    s = start(tmp_path, "--requirepass", "s3cret")
    yield s
    s.kill()


def test_django_with_password_and_db_in_url(password_server):
    for cache in _django_cache(f"redis://:s3cret@127.0.0.1:{password_server.port}/0"):
        cache.set("k", {"v": 1}, timeout=30)
        assert cache.get("k") == {"v": 1}
        assert cache.add("n", 1) is True
        assert cache.incr("n") == 2
        assert 29 <= _ttl_auth(password_server, b"site:1:k") <= 30


def _ttl_auth(server, key):
    with RawClient(server.port) as c:
        assert c.call("AUTH", "s3cret") == ("simple", b"OK")
        return c.call("TTL", key)[1]


def test_django_set_get_and_timeouts(server, django_cache):
    cache = django_cache
    cache.set("greeting", "hello")
    assert cache.get("greeting") == "hello"
    assert 298 <= _ttl(server, b"site:1:greeting") <= 300
    cache.set("forever", {"a": [1, 2, b"\x00\xff"]}, timeout=None)
    assert cache.get("forever") == {"a": [1, 2, b"\x00\xff"]}
    assert _ttl(server, b"site:1:forever") == -1
    cache.set("short", "v", timeout=10)
    assert 9 <= _ttl(server, b"site:1:short") <= 10
    cache.set("gone-now", "v", timeout=0)
    assert cache.get("gone-now") is None
    assert cache.get("missing", "default") == "default"
    assert cache.get_or_set("computed", lambda: 42) == 42
    assert cache.get("computed") == 42
    assert _keys(server) == [b"site:1:computed", b"site:1:forever", b"site:1:greeting",
                             b"site:1:short"]


def test_django_expiry_happens(server, django_cache):
    cache = django_cache
    cache.set("a", "v", timeout=1)
    cache.set_many({"b": 1, "c": 2}, timeout=1)
    cache.set("keep", "v", timeout=100)
    assert cache.get_many(["a", "b", "c"]) == {"a": "v", "b": 1, "c": 2}
    time.sleep(1.3)
    assert cache.get("a") is None
    assert cache.get_many(["a", "b", "c", "keep"]) == {"keep": "v"}
    assert cache.has_key("b") is False
    assert _keys(server) == [b"site:1:keep"]


def test_django_add_incr_decr_touch(server, django_cache):
    cache = django_cache
    assert cache.add("once", "first") is True
    assert cache.add("once", "second") is False
    assert cache.get("once") == "first"
    cache.set("hits", 10)
    assert cache.incr("hits") == 11
    assert cache.incr("hits", 5) == 16
    assert cache.decr("hits") == 15
    assert cache.decr("hits", 20) == -5
    assert cache.get("hits") == -5
    with pytest.raises(ValueError):
        cache.incr("no-such-counter")
    assert cache.touch("once", 50) is True
    assert 49 <= _ttl(server, b"site:1:once") <= 50
    assert cache.touch("once", None) is True
    assert _ttl(server, b"site:1:once") == -1
    assert cache.touch("no-such-key", 10) is False


def test_django_many_and_clear(server, django_cache):
    cache = django_cache
    data = {f"k{i}": {"n": i, "blob": bytes([i]) * i} for i in range(50)}
    assert cache.set_many(data, timeout=60) == []
    assert cache.get_many(list(data) + ["absent"]) == data
    assert all(55 <= _ttl(server, f"site:1:k{i}".encode()) <= 60 for i in (0, 25, 49))
    assert cache.has_key("k7") is True
    cache.delete_many([f"k{i}" for i in range(10)])
    assert cache.has_key("k7") is False
    assert len(cache.get_many(list(data))) == 40
    assert cache.delete("k20") is True
    assert cache.delete("k20") is False
    cache.clear()
    assert cache.get_many(list(data)) == {}
    assert _keys(server) == []


# --- cachelib ------------------------------------------------------------------------------

def test_cachelib_redis_cache(server):
    cachelib = pytest.importorskip("cachelib")
    cache = cachelib.RedisCache(port=server.port, key_prefix="app:", default_timeout=60)
    assert cache.set("user", {"id": 7}) is True
    assert cache.get("user") == {"id": 7}
    assert 55 <= _ttl(server, b"app:user") <= 60
    assert cache.add("user", "other") is False and cache.add("fresh", 1, timeout=20) is True
    assert 15 <= _ttl(server, b"app:fresh") <= 20
    assert cache.inc("hits") == 1 and cache.inc("hits", 9) == 10 and cache.dec("hits", 3) == 7
    assert cache.set_many({"a": 1, "b": [2]}, timeout=0) == ["a", "b"]
    assert _ttl(server, b"app:a") == -1
    assert cache.get_many("a", "b", "none") == [1, [2], None]
    assert cache.has("a") is True and cache.delete("a") is True and cache.has("a") is False
    assert cache.delete_many("b", "none") == ["b", "none"]
    assert cache.get_dict("user", "fresh") == {"user": {"id": 7}, "fresh": 1}
    assert cache.clear() is True
    assert _keys(server) == []


# --- Flask-Session -------------------------------------------------------------------------

def _flask_app(server, lifetime: timedelta):
    from flask import Flask, jsonify, session
    from flask_session import Session

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test-secret",
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(host="127.0.0.1", port=server.port),
        SESSION_PERMANENT=True,
        PERMANENT_SESSION_LIFETIME=lifetime,
        SESSION_KEY_PREFIX="session:",
    )
    Session(app)

    @app.route("/login/<user>")
    def login(user):
        session["user"] = user
        session["visits"] = 0
        return "ok"

    @app.route("/visit")
    def visit():
        if "user" not in session:
            return jsonify(user=None, visits=0)
        session["visits"] += 1
        return jsonify(user=session["user"], visits=session["visits"])

    @app.route("/logout")
    def logout():
        session.clear()
        return "bye"

    return app


def _session_keys(server):
    return [k for k in _keys(server) if k.startswith(b"session:")]


def test_flask_session_survives_requests(server):
    app = _flask_app(server, timedelta(seconds=600))
    alice, bob = app.test_client(), app.test_client()
    assert alice.get("/login/alice").status_code == 200
    assert alice.get("/visit").get_json() == {"user": "alice", "visits": 1}
    assert alice.get("/visit").get_json() == {"user": "alice", "visits": 2}
    assert bob.get("/visit").get_json() == {"user": None, "visits": 0}
    bob.get("/login/bob")
    assert bob.get("/visit").get_json() == {"user": "bob", "visits": 1}
    assert alice.get("/visit").get_json() == {"user": "alice", "visits": 3}

    keys = _session_keys(server)
    assert len(keys) == 2
    sid = alice.get_cookie("session").value
    assert f"session:{sid}".encode() in keys
    for key in keys:
        assert 595 <= _ttl(server, key) <= 600

    alice.get("/logout")
    assert alice.get("/visit").get_json() == {"user": None, "visits": 0}
    assert f"session:{sid}".encode() not in _session_keys(server)
    assert bob.get("/visit").get_json() == {"user": "bob", "visits": 2}


def test_flask_session_expires_with_its_lifetime(server):
    app = _flask_app(server, timedelta(seconds=1))
    client = app.test_client()
    client.get("/login/carol")
    assert client.get("/visit").get_json() == {"user": "carol", "visits": 1}
    time.sleep(1.3)
    assert _session_keys(server) == []
    assert client.get("/visit").get_json() == {"user": None, "visits": 0}


def test_django_cache_session_store(server, django_cache):
    """django.contrib.sessions' cache backend (SESSION_ENGINE = "...sessions.backends.cache")."""
    from django.contrib.sessions.backends.cache import SessionStore

    store = SessionStore()
    store["user_id"] = 42
    store["cart"] = ["book", "pen"]
    store.set_expiry(120)
    store.save()
    key = store.session_key
    assert key

    loaded = SessionStore(session_key=key)
    assert loaded["user_id"] == 42 and loaded["cart"] == ["book", "pen"]
    loaded["cart"].append("lamp")
    loaded.modified = True
    loaded.save()
    assert SessionStore(session_key=key)["cart"] == ["book", "pen", "lamp"]

    cache_key = f"site:1:django.contrib.sessions.cache{key}".encode()
    assert 115 <= _ttl(server, cache_key) <= 120
    assert SessionStore().exists(key) is True
    loaded.flush()
    assert SessionStore().exists(key) is False
    assert dict(SessionStore(session_key=key).items()) == {}
