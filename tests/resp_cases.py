"""Command sequences for the differential test (tests/test_resp_differential.py).

Each case is a name and a list of steps run on a fresh connection after FLUSHALL, the same
steps against a real redis-server and against fastdyn. A step is a command (a tuple of
arguments: str, bytes or int), `Sleep(seconds)`, or `ScanAll(*options)` (a full SCAN iteration
compared as a set of keys). Every command of the cache/session set appears with its options
and its error paths.
"""
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Sleep:
    seconds: float


class ScanAll:
    def __init__(self, *options):
        self.options = options

    def __repr__(self):
        return f"ScanAll{self.options!r}"


NOW = int(time.time())
FUTURE_S = NOW + 1000            # an EXAT/EXPIREAT well ahead of the test run
FUTURE_MS = FUTURE_S * 1000
PAST_S = NOW - 1000
PAST_MS = PAST_S * 1000
I64_MAX = 9223372036854775807
I64_MIN = -9223372036854775808

BINARY_KEY = b"k\x00\r\n\xff\xfe key"
BINARY_VALUE = b"\x00\x01\r\n\r\n$3\r\n*1\r\n\xff\x80 end"

CASES = {
    # --- connection -----------------------------------------------------------------------
    "ping": [("PING",), ("PING", "hello"), ("ping", b""), ("PING", "a", "b")],
    "echo": [("ECHO", "hi"), ("ECHO", b""), ("ECHO", BINARY_VALUE), ("ECHO",), ("ECHO", "a", "b")],
    "select": [("SELECT", 0), ("SELECT", 1), ("SELECT", -1), ("SELECT", "abc"), ("SELECT",),
               ("SELECT", 0, 1), ("SET", "k", "v"), ("SELECT", 0), ("GET", "k")],
    "auth_without_password": [("AUTH", "secret"), ("AUTH",), ("AUTH", "a", "b", "c"),
                              ("PING",)],
    "client_name": [("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "worker-1"),
                    ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "has space"),
                    ("CLIENT", "SETNAME", "nl\nx"), ("CLIENT", "GETNAME"),
                    ("CLIENT", "SETNAME", ""), ("CLIENT", "GETNAME"),
                    ("CLIENT", "SETNAME"), ("CLIENT", "GETNAME", "x")],
    "client_errors": [("CLIENT",), ("CLIENT", "NOSUCHSUB"), ("CLIENT", "ID"),
                      ("CLIENT", "ID", "extra")],
    "hello_errors": [("HELLO", 4), ("HELLO", 1), ("HELLO", "abc"), ("HELLO", 3, "BOGUS"),
                     ("HELLO", 3, "AUTH", "default"), ("HELLO", 2), ("PING",)],
    "hello_auth_no_password": [("HELLO", 2, "AUTH", "default", "anything"), ("PING",)],
    "hello_setname": [("HELLO", 3, "SETNAME", "conn-a"), ("CLIENT", "GETNAME"),
                      ("HELLO", 2, "SETNAME", "bad name"), ("CLIENT", "GETNAME"),
                      ("HELLO", 2, "SETNAME"), ("HELLO",), ("CLIENT", "GETNAME")],
    "info_and_command": [("SET", "a", "1"), ("SET", "b", "2", "EX", 100), ("INFO",),
                         ("INFO", "keyspace"), ("INFO", "server"), ("COMMAND", "COUNT"),
                         ("COMMAND",), ("COMMAND", "DOCS", "GET"), ("DBSIZE",)],
    "unknown_command": [("NOSUCHCOMMAND",), ("NOSUCHCOMMAND", "a", "b"), ("get2", "x"),
                        (b"\xff\x00", "x"), (b"",), ("PING",)],
    "integer_argument_spelling": [
        ("SET", "k", "v"), ("EXPIRE", "k", "+10"), ("EXPIRE", "k", "010"), ("EXPIRE", "k", " 10"),
        ("EXPIRE", "k", "10 "), ("EXPIRE", "k", ""), ("SETEX", "k", "010", "v"),
        ("SET", "k", "v", "EX", "0x10"), ("INCRBY", "c", "-0"), ("INCRBY", "c", "00"),
        ("DECRBY", "c", "1e3"), ("PEXPIRE", "k", "-0"), ("TTL", "k"), ("GET", "c")],
    # --- keyspace -------------------------------------------------------------------------
    "dbsize_flush": [("DBSIZE",), ("MSET", "a", 1, "b", 2, "c", 3), ("DBSIZE",), ("FLUSHDB",),
                     ("DBSIZE",), ("GET", "a"), ("SET", "d", 4), ("FLUSHALL",), ("DBSIZE",),
                     ("SET", "e", 5), ("FLUSHDB", "SYNC"), ("DBSIZE",), ("SET", "e", 5),
                     ("FLUSHALL", "ASYNC"), ("DBSIZE",), ("FLUSHDB", "BOGUS"),
                     ("FLUSHALL", "SYNC", "ASYNC"), ("DBSIZE", "x")],
    "del_exists_unlink_touch": [
        ("MSET", "a", 1, "b", 2, "c", 3), ("EXISTS", "a"), ("EXISTS", "a", "a", "b", "zz"),
        ("TOUCH", "a", "zz", "b"), ("DEL", "a", "zz"), ("DEL", "a"), ("UNLINK", "b", "b"),
        ("EXISTS", "a", "b", "c"), ("DEL",), ("EXISTS",), ("TOUCH",), ("UNLINK",),
        ("DBSIZE",)],
    "type": [("TYPE", "nope"), ("SET", "s", "v"), ("TYPE", "s"), ("INCR", "n"), ("TYPE", "n"),
             ("TYPE",), ("TYPE", "a", "b")],
    "keys_glob": [
        ("MSET", "hello", 1, "hallo", 2, "hxllo", 3, "hllo", 4, "heeeello", 5, "h*llo", 6,
         "h?llo", 7, "a[b", 8, "user:1", 9, "user:22", 10, "User:3", 11, "x\\y", 12),
        ("KEYS", "*"), ("KEYS", "h?llo"), ("KEYS", "h*llo"), ("KEYS", "h[ae]llo"),
        ("KEYS", "h[^e]llo"), ("KEYS", "h[a-b]llo"), ("KEYS", "h[b-a]llo"), ("KEYS", "h\\*llo"),
        ("KEYS", "h\\?llo"), ("KEYS", "user:?"), ("KEYS", "user:*"), ("KEYS", "[uU]ser:*"),
        ("KEYS", "a\\[b"), ("KEYS", "a[[]b"), ("KEYS", "nomatch*"), ("KEYS", "hello"),
        ("KEYS", "x\\\\y"), ("KEYS", "*llo"), ("KEYS", "h*"), ("KEYS", "**"), ("KEYS", ""),
        ("KEYS", "[a-z]*"), ("KEYS",), ("KEYS", "a", "b")],
    "scan": [
        ("MSET", *[x for i in range(60) for x in (f"key:{i}", i)]),
        ("MSET", "other", 1, "k\x00bin", 2),
        ScanAll(), ScanAll("MATCH", "key:1*"), ScanAll("COUNT", 7),
        ScanAll("MATCH", "key:?", "COUNT", 3), ScanAll("MATCH", "nothing*"),
        ScanAll("MATCH", "*bin"),
        ("SCAN", "abc"), ("SCAN", 0, "COUNT", 0), ("SCAN", 0, "COUNT", "x"), ("SCAN", 0, "MATCH"),
        ("SCAN", 0, "BOGUS", 1), ("SCAN",)],
    # --- strings: GET/SET -----------------------------------------------------------------
    "get_set_basic": [("GET", "k"), ("SET", "k", "v"), ("GET", "k"), ("SET", "k", "v2"),
                      ("GET", "k"), ("SET", "empty", b""), ("GET", "empty"),
                      ("STRLEN", "empty"), ("GET",), ("GET", "a", "b"), ("SET", "k"),
                      ("SET",)],
    "binary_keys_values": [
        ("SET", BINARY_KEY, BINARY_VALUE), ("GET", BINARY_KEY), ("EXISTS", BINARY_KEY),
        ("STRLEN", BINARY_KEY), ("APPEND", BINARY_KEY, b"\x00\xff"), ("GET", BINARY_KEY),
        ("SET", b"\xff" * 3, b"\x00" * 100), ("GET", b"\xff" * 3),
        ("MGET", b"\xff" * 3, BINARY_KEY, "x"),
        ("SET", b"crlf\r\n", b"\r\n"), ("GET", b"crlf\r\n"), ("KEYS", "crlf*"),
        ("DEL", BINARY_KEY), ("GET", BINARY_KEY),
        ("SET", "big", b"\xab" * 100000), ("GET", "big"), ("STRLEN", "big")],
    "set_ex_px": [
        ("SET", "k", "v", "EX", 100), ("TTL", "k"), ("PTTL", "k"),
        ("SET", "k", "v", "PX", 100000), ("PTTL", "k"), ("SET", "k", "v", "ex", 5),
        ("TTL", "k"), ("SET", "k", "v"), ("TTL", "k"),
        ("SET", "k", "v", "EX", 0), ("SET", "k", "v", "EX", -1), ("SET", "k", "v", "PX", 0),
        ("SET", "k", "v", "PX", -5), ("SET", "k", "v", "EX", "abc"), ("SET", "k", "v", "EX", "1.5"),
        ("SET", "k", "v", "EX"), ("SET", "k", "v", "EX", 10, "PX", 100),
        ("SET", "k", "v", "EX", 10, "EX", 10), ("SET", "k", "v", "EX", I64_MAX),
        ("SET", "k", "v", "PX", I64_MAX), ("SET", "k", "v", "EX", 99999999999999999999),
        ("GET", "k"), ("TTL", "k")],
    "set_exat_pxat": [
        ("SET", "k", "v", "EXAT", FUTURE_S), ("TTL", "k"), ("EXPIRETIME", "k"),
        ("PEXPIRETIME", "k"), ("SET", "k", "v", "PXAT", FUTURE_MS + 500),
        ("PEXPIRETIME", "k"), ("EXPIRETIME", "k"), ("SET", "old", "v", "EXAT", PAST_S),
        ("GET", "old"), ("EXISTS", "old"), ("SET", "old", "v", "PXAT", PAST_MS), ("GET", "old"),
        ("SET", "k", "v", "EXAT", 0), ("SET", "k", "v", "PXAT", -1),
        ("SET", "k", "v", "EXAT", FUTURE_S, "PXAT", FUTURE_MS), ("DBSIZE",)],
    "set_nx_xx": [
        ("SET", "k", "v", "XX"), ("GET", "k"), ("SET", "k", "v", "NX"), ("SET", "k", "w", "NX"),
        ("GET", "k"), ("SET", "k", "w", "XX"), ("GET", "k"), ("SET", "k", "v", "NX", "XX"),
        ("SET", "k", "v", "XX", "NX"), ("SET", "n", "v", "nx", "EX", 100), ("TTL", "n"),
        ("SET", "n", "v2", "XX", "PX", 50000), ("PTTL", "n"), ("SET", "k", "v", "NX", "NX")],
    "set_keepttl": [
        ("SET", "k", "v", "EX", 100), ("SET", "k", "v2", "KEEPTTL"), ("TTL", "k"), ("GET", "k"),
        ("SET", "k", "v3"), ("TTL", "k"), ("SET", "k", "v4", "KEEPTTL"), ("TTL", "k"),
        ("SET", "k", "v", "KEEPTTL", "EX", 10), ("SET", "k", "v", "PX", 10, "KEEPTTL"),
        ("SET", "m", "v", "KEEPTTL"), ("TTL", "m"), ("SET", "k", "v", "EX", 50),
        ("SET", "k", "v", "XX", "KEEPTTL"), ("TTL", "k")],
    "set_get_option": [
        ("SET", "k", "v1", "GET"), ("SET", "k", "v2", "GET"), ("GET", "k"),
        ("SET", "k", "v3", "NX", "GET"), ("GET", "k"), ("SET", "new", "x", "NX", "GET"),
        ("GET", "new"), ("SET", "k", "v4", "XX", "GET"), ("SET", "missing", "x", "XX", "GET"),
        ("EXISTS", "missing"), ("SET", "k", "v5", "GET", "EX", 100), ("TTL", "k"),
        ("SET", "k", "v6", "GET", "KEEPTTL"), ("TTL", "k"), ("SET", "k", "v", "GET", "GET"),
        ("SET", "k", "v", "BOGUS")],
    "setex_psetex_setnx": [
        ("SETEX", "k", 100, "v"), ("TTL", "k"), ("GET", "k"), ("PSETEX", "p", 100000, "v"),
        ("PTTL", "p"), ("SETEX", "k", 0, "v"), ("SETEX", "k", -10, "v"), ("PSETEX", "k", 0, "v"),
        ("SETEX", "k", "abc", "v"), ("SETEX", "k", 10), ("PSETEX", "k"),
        ("SETEX", "k", I64_MAX, "v"),
        ("SETNX", "k", "other"), ("SETNX", "fresh", "x"), ("GET", "fresh"), ("SETNX", "fresh"),
        ("GET", "k")],
    "getset_getdel": [
        ("GETSET", "k", "v1"), ("GETSET", "k", "v2"), ("GET", "k"), ("SET", "t", "v", "EX", 100),
        ("GETSET", "t", "w"), ("TTL", "t"), ("GETDEL", "k"), ("GETDEL", "k"), ("EXISTS", "k"),
        ("GETSET", "k"), ("GETDEL",), ("GETDEL", "a", "b")],
    "getex": [
        ("GETEX", "missing"), ("GETEX", "missing", "EX", 10), ("EXISTS", "missing"),
        ("SET", "k", "v"), ("GETEX", "k"), ("TTL", "k"), ("GETEX", "k", "EX", 100), ("TTL", "k"),
        ("GETEX", "k", "PX", 50000), ("PTTL", "k"), ("GETEX", "k", "EXAT", FUTURE_S),
        ("EXPIRETIME", "k"), ("GETEX", "k", "PXAT", FUTURE_MS + 7), ("PEXPIRETIME", "k"),
        ("GETEX", "k", "PERSIST"), ("TTL", "k"), ("GETEX", "k", "EX", 0),
        ("GETEX", "k", "EX", -1), ("GETEX", "k", "PX", "x"), ("GETEX", "k", "EX", 10, "PX", 10),
        ("GETEX", "k", "PERSIST", "EX", 10), ("GETEX", "k", "EX"), ("GETEX", "k", "KEEPTTL"),
        ("GETEX", "k", "BOGUS"), ("GETEX",), ("GETEX", "k", "EXAT", PAST_S), ("EXISTS", "k"),
        ("TTL", "k")],
    "getex_missing_key_ignores_expiry": [
        ("GETEX", "missing", "EX", -5), ("GETEX", "missing", "PX", 0),
        ("GETEX", "missing", "EX", "x"), ("GETEX", "missing", "EXAT", I64_MAX),
        ("GETEX", "missing", "EX", 10, "PX", 10), ("SET", "k", "v"), ("GETEX", "k", "EX", -5)],
    "mget_mset_msetnx": [
        ("MSET", "a", 1, "b", 2), ("MGET", "a", "b", "c", "a"), ("MSET", "a"),
        ("MSET", "a", 1, "b"), ("MSET",), ("MGET",), ("MSETNX", "b", 3, "c", 4),
        ("MGET", "b", "c"), ("MSETNX", "c", 5, "d", 6), ("MGET", "c", "d"),
        ("MSETNX", "e", 1, "e", 2), ("GET", "e"), ("MSETNX", "x"), ("SET", "t", 1, "EX", 100),
        ("MSET", "t", 2), ("TTL", "t")],
    # --- expiry ---------------------------------------------------------------------------
    "expire_basic": [
        ("EXPIRE", "missing", 100), ("PEXPIRE", "missing", 100), ("EXPIREAT", "missing", FUTURE_S),
        ("PEXPIREAT", "missing", FUTURE_MS), ("TTL", "missing"), ("PTTL", "missing"),
        ("EXPIRETIME", "missing"), ("PEXPIRETIME", "missing"),
        ("SET", "k", "v"), ("TTL", "k"), ("PTTL", "k"), ("EXPIRETIME", "k"),
        ("PEXPIRETIME", "k"), ("EXPIRE", "k", 100), ("TTL", "k"), ("PEXPIRE", "k", 200000),
        ("PTTL", "k"), ("EXPIREAT", "k", FUTURE_S), ("EXPIRETIME", "k"),
        ("PEXPIREAT", "k", FUTURE_MS + 123), ("PEXPIRETIME", "k"), ("PERSIST", "k"),
        ("PERSIST", "k"), ("PERSIST", "missing"), ("TTL", "k")],
    "expire_errors": [
        ("SET", "k", "v"), ("EXPIRE", "k"), ("EXPIRE", "k", "abc"), ("EXPIRE", "k", "1.5"),
        ("EXPIRE", "k", 10, "BOGUS"), ("EXPIRE", "k", 10, "NX", "XX"),
        ("EXPIRE", "k", 10, "GT", "LT"), ("EXPIRE", "k", 10, "NX", "GT"),
        ("EXPIRE", "k", 10, "NX", "LT"), ("PEXPIRE", "k", 10, "XX", "NX"),
        ("EXPIRE", "k", I64_MAX), ("PEXPIRE", "k", I64_MAX), ("EXPIREAT", "k", I64_MAX),
        ("PEXPIREAT", "k", I64_MAX), ("EXPIRE", "k", I64_MIN),
        ("EXPIRE", "k", 99999999999999999999),
        ("TTL", "k"), ("PERSIST",), ("PERSIST", "a", "b"), ("TTL",), ("PTTL", "a", "b"),
        ("EXPIRETIME",), ("GET", "k")],
    "expiry_at_the_limit": [
        ("SET", "k", "v", "PXAT", I64_MAX), ("PEXPIRETIME", "k"), ("GET", "k"),
        ("SET", "k", "v", "PXAT", I64_MAX + 1), ("SET", "s", "v", "EXAT", I64_MAX // 1000),
        ("PEXPIRETIME", "s"), ("SET", "s", "v", "EXAT", I64_MAX // 1000 + 1),
        ("SET", "n", 1), ("PEXPIREAT", "n", I64_MAX), ("INCR", "n"), ("PEXPIRETIME", "n"),
        ("APPEND", "n", 0), ("PEXPIRETIME", "n"), ("GETEX", "g", "PXAT", I64_MAX),
        ("SET", "g", "v"), ("GETEX", "g", "PXAT", I64_MAX), ("PEXPIRETIME", "g"),
        ("RENAME", "g", "h"), ("PEXPIRETIME", "h"), ("COPY", "h", "i"), ("PEXPIRETIME", "i"),
        ("PEXPIREAT", "i", I64_MAX, "LT"), ("PEXPIREAT", "i", I64_MAX, "GT"),
        ("EXPIREAT", "i", I64_MAX // 1000, "LT"), ("PEXPIRETIME", "i"), ("DBSIZE",)],
    "expire_nx_xx_gt_lt": [
        ("SET", "k", "v"), ("EXPIRE", "k", 100, "XX"), ("TTL", "k"), ("EXPIRE", "k", 100, "GT"),
        ("TTL", "k"), ("EXPIRE", "k", 100, "LT"), ("TTL", "k"), ("EXPIRE", "k", 200, "NX"),
        ("TTL", "k"), ("EXPIRE", "k", 200, "XX"), ("TTL", "k"), ("EXPIRE", "k", 100, "GT"),
        ("TTL", "k"), ("EXPIRE", "k", 300, "GT"), ("TTL", "k"), ("EXPIRE", "k", 400, "LT"),
        ("TTL", "k"), ("EXPIRE", "k", 50, "LT"), ("TTL", "k"), ("EXPIRE", "k", 60, "xx", "gt"),
        ("TTL", "k"), ("EXPIRE", "k", 30, "XX", "LT"), ("TTL", "k"), ("SET", "p", "v"),
        ("PEXPIRE", "p", 100000, "NX"), ("PTTL", "p"), ("PEXPIRE", "p", 900000, "NX"),
        ("PEXPIREAT", "p", FUTURE_MS, "GT"), ("PEXPIRETIME", "p"),
        ("EXPIREAT", "p", FUTURE_S - 10, "LT"), ("EXPIRETIME", "p"),
        ("EXPIREAT", "p", FUTURE_S + 10, "LT"), ("EXPIRETIME", "p"),
        ("EXPIRE", "missing", 10, "NX"), ("EXPIRE", "missing", 10, "LT")],
    "expire_nonpositive_deletes": [
        ("SET", "a", "v"), ("EXPIRE", "a", 0), ("EXISTS", "a"), ("SET", "b", "v"),
        ("EXPIRE", "b", -5), ("GET", "b"), ("SET", "c", "v"), ("PEXPIRE", "c", -1),
        ("TTL", "c"), ("SET", "d", "v"), ("EXPIREAT", "d", PAST_S), ("EXISTS", "d"),
        ("SET", "e", "v"), ("PEXPIREAT", "e", 1), ("EXISTS", "e"), ("SET", "f", "v"),
        ("EXPIRE", "f", 0, "GT"), ("EXISTS", "f"), ("EXPIRE", "f", 0, "XX"), ("EXISTS", "f"),
        ("SET", "g", "v", "EX", 100), ("EXPIRE", "g", -1, "LT"), ("EXISTS", "g"), ("DBSIZE",)],
    "expiry_happens": [
        ("SET", "px", "v", "PX", 100), ("SET", "keep", "v"), ("PSETEX", "ps", 150, "v"),
        ("MSET", "m1", 1, "m2", 2), ("PEXPIRE", "m1", 100), ("SET", "gx", "v"),
        ("GETEX", "gx", "PX", 100), ("SET", "inc", 5, "PX", 100), ("INCR", "inc"),
        ("EXISTS", "px", "ps", "m1", "gx", "inc"),
        Sleep(0.4),
        ("GET", "px"), ("GET", "ps"), ("EXISTS", "px", "ps", "m1", "gx", "inc", "keep", "m2"),
        ("TTL", "px"), ("PTTL", "ps"), ("MGET", "m1", "m2"), ("GETEX", "gx"), ("GET", "inc"),
        ("INCR", "inc"), ("TTL", "inc"), ("SETNX", "px", "new"), ("GET", "px"),
        ("SET", "ps", "x", "XX"), ("APPEND", "m1", "z"), ("GET", "m1"), ("KEYS", "*"),
        ScanAll(), ("DBSIZE",)],
    "ttl_edges": [
        ("SET", "k", "v", "EX", 100), ("APPEND", "k", "w"), ("TTL", "k"), ("INCR", "n"),
        ("EXPIRE", "n", 100), ("INCR", "n"), ("TTL", "n"), ("DECRBY", "n", 3), ("TTL", "n"),
        ("SETEX", "s", 100, "v"), ("SETNX", "s", "w"), ("TTL", "s"), ("GETSET", "s", "w"),
        ("TTL", "s"), ("SET", "g", "v", "EX", 100), ("GETDEL", "g"), ("TTL", "g"),
        ("SET", "k2", "v", "PX", 1500), ("TTL", "k2"), ("SET", "k3", "v", "PX", 500),
        ("TTL", "k3"), ("PTTL", "k3")],
    # --- counters -------------------------------------------------------------------------
    "incr_decr": [
        ("INCR", "c"), ("INCR", "c"), ("INCRBY", "c", 10), ("DECR", "c"), ("DECRBY", "c", 5),
        ("GET", "c"), ("INCRBY", "c", -20), ("GET", "c"), ("DECRBY", "c", -3), ("STRLEN", "c"),
        ("TYPE", "c"), ("SET", "s", "41"), ("INCR", "s"), ("SET", "neg", "-7"), ("DECR", "neg"),
        ("INCRBY", "new", 0), ("DECR", "fresh"), ("APPEND", "c", "5"), ("INCR", "c"),
        ("GET", "c"), ("INCRBY", "c", "+5"), ("INCRBY", "c", " 5")],
    "incr_errors": [
        ("SET", "s", "abc"), ("INCR", "s"), ("DECR", "s"), ("INCRBY", "s", 1), ("GET", "s"),
        ("SET", "f", "1.5"), ("INCR", "f"), ("SET", "lead0", "01"), ("INCR", "lead0"),
        ("SET", "plus", "+1"), ("INCR", "plus"), ("SET", "space", " 1"), ("INCR", "space"),
        ("SET", "trail", "1 "), ("INCR", "trail"), ("SET", "negzero", "-0"), ("INCR", "negzero"),
        ("SET", "zero", "0"), ("INCR", "zero"), ("SET", "empty", b""), ("INCR", "empty"),
        ("SET", "nul", b"1\x00"), ("INCR", "nul"), ("SET", "huge", "99999999999999999999"),
        ("INCR", "huge"), ("INCRBY", "c", "abc"), ("INCRBY", "c", "1.0"), ("INCRBY", "c"),
        ("INCR",), ("INCR", "a", "b"), ("DECRBY", "c", "x"), ("DECRBY", "c"),
        ("INCRBY", "c", 99999999999999999999), ("EXISTS", "c")],
    "incr_overflow": [
        ("SET", "c", I64_MAX), ("INCR", "c"), ("GET", "c"), ("INCRBY", "c", 1), ("DECR", "c"),
        ("SET", "m", I64_MIN), ("DECR", "m"), ("DECRBY", "m", 1), ("INCRBY", "m", -1),
        ("INCR", "m"), ("SET", "z", 0), ("INCRBY", "z", I64_MAX), ("INCRBY", "z", 1),
        ("SET", "z", 0), ("INCRBY", "z", I64_MIN), ("DECRBY", "z", 1), ("SET", "y", 0),
        ("DECRBY", "y", I64_MIN), ("DECRBY", "y", I64_MAX), ("GET", "y"),
        ("SET", "w", -1), ("INCRBY", "w", I64_MIN), ("GET", "w")],
    "incrbyfloat": [
        ("SET", "f", "10.50"), ("INCRBYFLOAT", "f", "0.1"), ("INCRBYFLOAT", "f", "-5.0e3"),
        ("SET", "g", "0.1"), ("INCRBYFLOAT", "g", "0.2"), ("INCRBYFLOAT", "g", "1e300"),
        ("INCRBYFLOAT", "g", "inf"), ("INCRBYFLOAT", "g", "nan"), ("INCRBYFLOAT", "n", "3"),
        ("INCRBYFLOAT", "n", "abc"), ("INCRBYFLOAT", "n", " 1"), ("INCRBYFLOAT", "n", "0x10"),
        ("INCRBYFLOAT", "i", "1.23456789012345678901"), ("SET", "t", "abc"),
        ("INCRBYFLOAT", "t", "1"), ("INCRBYFLOAT", "j", "-0"), ("SET", "e", "1e2"),
        ("INCRBYFLOAT", "e", "1"), ("INCR", "e"), ("SET", "c", 5, "EX", 100),
        ("INCRBYFLOAT", "c", "0.5"), ("TTL", "c"), ("INCRBYFLOAT", "c"),
        ("INCRBYFLOAT", "c", 1, 2)],
    "incrbyfloat_binary_values": [
        ("SET", "f", b"1\x00abc"), ("INCRBYFLOAT", "f", "0.5"), ("SET", "f", b"\x00"),
        ("INCRBYFLOAT", "f", "0.5"), ("SET", "f", b"1.5\x00"), ("INCRBYFLOAT", "f", "0.5"),
        ("APPEND", "g", b"\x00\r\n\xff"), ("INCRBYFLOAT", "g", "0.1"), ("GET", "f"),
        ("INCRBYFLOAT", "h", b"1\x00"), ("INCRBYFLOAT", "h", "infinity")],
    # --- other strings --------------------------------------------------------------------
    "append_strlen": [
        ("APPEND", "k", "hello"), ("APPEND", "k", " world"), ("GET", "k"), ("STRLEN", "k"),
        ("APPEND", "k", b""), ("STRLEN", "k"), ("STRLEN", "missing"), ("APPEND", "e", b""),
        ("EXISTS", "e"), ("GET", "e"), ("APPEND", "k"), ("STRLEN",), ("STRLEN", "a", "b"),
        ("APPEND", "b", b"\x00\r\n"), ("STRLEN", "b")],
    "case_insensitive_names": [
        ("set", "k", "v", "ex", 100), ("GeT", "k"), ("ttl", "k"), ("mget", "k", "x"),
        ("incrBY", "n", 3), ("Del", "k", "n"), ("dbsize",)],
    "getrange_substr": [
        ("SET", "k", "Hello World"), ("GETRANGE", "k", 0, 4), ("GETRANGE", "k", -5, -1),
        ("GETRANGE", "k", 5, 2), ("GETRANGE", "k", -100, 100), ("GETRANGE", "k", 0, -100),
        ("GETRANGE", "k", 3, -100), ("GETRANGE", "k", -1, -2), ("GETRANGE", "k", -2, -1),
        ("GETRANGE", "k", 10, 10), ("GETRANGE", "k", 11, 20), ("GETRANGE", "k", 0, I64_MAX),
        ("GETRANGE", "k", I64_MIN, -1), ("GETRANGE", "k", I64_MIN, I64_MAX),
        ("GETRANGE", "missing", 0, 10), ("GETRANGE", "k", "x", 1), ("GETRANGE", "k", 0, "1.5"),
        ("GETRANGE", "k", 0), ("GETRANGE", "k", 0, 1, 2), ("SUBSTR", "k", 0, 3),
        ("SUBSTR", "k", -3, -1), ("SUBSTR", "k", 0), ("SET", "e", b""), ("GETRANGE", "e", 0, -1),
        ("GETRANGE", "e", 0, 0), ("SET", "bin", BINARY_VALUE), ("GETRANGE", "bin", 1, 8)],
    "setrange": [
        ("SET", "k", "Hello World"), ("SETRANGE", "k", 6, "Redis"), ("GET", "k"),
        ("SETRANGE", "k", 20, "!"), ("GET", "k"), ("STRLEN", "k"), ("SETRANGE", "new", 5, "x"),
        ("GET", "new"), ("SETRANGE", "k", -1, "x"), ("SETRANGE", "e", 0, b""),
        ("EXISTS", "e"), ("SETRANGE", "e", 100, b""), ("EXISTS", "e"), ("SETRANGE", "k", 3, b""),
        ("SETRANGE", "k", 536870912, "x"), ("SETRANGE", "k", I64_MAX, "x"),
        ("SETRANGE", "missing", 536870912, b""), ("SETRANGE", "k", "abc", "x"),
        ("SETRANGE", "k", "1.5", "x"), ("SETRANGE", "k", 0), ("SETRANGE", "k", 0, "a", "b"),
        ("SET", "t", "value", "EX", 100), ("SETRANGE", "t", 0, "V"), ("TTL", "t"), ("GET", "t"),
        ("SETRANGE", "b", 2, BINARY_VALUE), ("GET", "b"), ("INCR", "n"),
        ("SETRANGE", "n", 1, "5"), ("INCR", "n")],
    "getbit_setbit": [
        ("SETBIT", "b", 7, 1), ("SETBIT", "b", 7, 1), ("SETBIT", "b", 7, 0), ("GETBIT", "b", 7),
        ("SETBIT", "b", 0, 1), ("GET", "b"), ("SETBIT", "b", 7, 2), ("SETBIT", "b", 7, -1),
        ("SETBIT", "b", 7, "01"), ("SETBIT", "b", -1, 1), ("SETBIT", "b", 4294967296, 1),
        ("SETBIT", "b", "x", 1), ("SETBIT", "b", "x", 5), ("SETBIT", "b", 7),
        ("GETBIT", "b", 0), ("GETBIT", "b", 1), ("GETBIT", "b", 1000),
        ("GETBIT", "b", 4294967295), ("GETBIT", "b", 4294967296), ("GETBIT", "b", -1),
        ("GETBIT", "b", "x"), ("GETBIT", "missing", 0), ("GETBIT", "b"),
        ("SETBIT", "z", 20, 0), ("GET", "z"), ("STRLEN", "z"), ("SETBIT", "z", 23, 1),
        ("GET", "z"), ("SET", "t", "a", "EX", 100), ("SETBIT", "t", 6, 1), ("GET", "t"),
        ("TTL", "t"), ("SET", "c", "9"), ("SETBIT", "c", 7, 0), ("GET", "c")],
    "bitcount": [
        ("SET", "f", "foobar"), ("BITCOUNT", "f"), ("BITCOUNT", "f", 0, 0), ("BITCOUNT", "f", 1, 1),
        ("BITCOUNT", "f", 1, 1, "BYTE"), ("BITCOUNT", "f", 5, 30, "BIT"),
        ("BITCOUNT", "f", 5, 30, "bit"), ("BITCOUNT", "f", -1, -1), ("BITCOUNT", "f", -10, -20),
        ("BITCOUNT", "f", -20, -10), ("BITCOUNT", "f", -1, -5, "BIT"),
        ("BITCOUNT", "f", -1, -5, "BOGUS"), ("BITCOUNT", "f", 0, -1, "BIT"),
        ("BITCOUNT", "f", -3, -1, "BIT"), ("BITCOUNT", "f", 0, 100, "BIT"),
        ("BITCOUNT", "f", 3, 2), ("BITCOUNT", "f", 0, -1, "BOGUS"), ("BITCOUNT", "f", 1),
        ("BITCOUNT", "f", "x", 1), ("BITCOUNT", "f", 0, "y"), ("BITCOUNT", "f", 0, 1, "BIT", "x"),
        ("BITCOUNT", "missing"), ("BITCOUNT", "missing", "x", "y"), ("BITCOUNT", "missing", 1),
        ("BITCOUNT", "missing", 0, 1, "BIT", "x"), ("BITCOUNT",), ("SET", "e", b""),
        ("BITCOUNT", "e"), ("BITCOUNT", "e", 0, -1, "BIT"), ("BITCOUNT", "f", I64_MIN, I64_MAX),
        ("BITCOUNT", "f", I64_MIN, I64_MAX, "BIT")],
    "bitpos": [
        ("SET", "f", b"\xff\xf0\x00"), ("BITPOS", "f", 0), ("BITPOS", "f", 1),
        ("BITPOS", "f", 0, 2), ("BITPOS", "f", 0, 2, -1), ("BITPOS", "f", 1, 2),
        ("BITPOS", "f", 0, 0, 0), ("BITPOS", "f", 0, 0), ("BITPOS", "f", 1, 7, 15, "BIT"),
        ("BITPOS", "f", 0, 3, 10, "BIT"), ("BITPOS", "f", 0, 3, 12, "BIT"),
        ("BITPOS", "f", 0, 9, -1, "BIT"), ("BITPOS", "f", 1, 12, -1, "BIT"),
        ("BITPOS", "f", 0, -1, -1), ("BITPOS", "f", 0, 5, 2), ("BITPOS", "f", 1, -10, -20),
        ("BITPOS", "f", 0, 0, -1, "byte"), ("BITPOS", "f", 1, 1, 1, "BYTE"),
        ("SET", "ones", b"\xff\xff"), ("BITPOS", "ones", 0), ("BITPOS", "ones", 0, 0, -1),
        ("BITPOS", "ones", 0, 0), ("BITPOS", "ones", 0, 3, 9, "BIT"), ("BITPOS", "ones", 1, 3),
        ("BITPOS", "missing", 0), ("BITPOS", "missing", 1), ("BITPOS", "missing", 1, 0, 5),
        ("BITPOS", "f", 2), ("BITPOS", "f", -1), ("BITPOS", "f", "x"), ("BITPOS", "f", 1, "x"),
        ("BITPOS", "f", 1, 0, "x"), ("BITPOS", "f", 1, 0, 1, "BOGUS"),
        ("BITPOS", "f", 1, 0, 1, "BIT", "x"), ("BITPOS", "missing", 1, 0, 1, "BIT", "x"),
        ("BITPOS", "f"), ("SET", "e", b""), ("BITPOS", "e", 0), ("BITPOS", "e", 1),
        ("BITPOS", "e", 0, 0, -1, "BIT")],
    "lcs": [
        ("MSET", "key1", "ohmytext", "key2", "mynewtext"), ("LCS", "key1", "key2"),
        ("LCS", "key1", "key2", "LEN"), ("LCS", "key1", "key2", "IDX"),
        ("LCS", "key1", "key2", "IDX", "MINMATCHLEN", 4),
        ("LCS", "key1", "key2", "IDX", "MINMATCHLEN", 4, "WITHMATCHLEN"),
        ("LCS", "key1", "key2", "idx", "withmatchlen"), ("LCS", "key1", "key2", "LEN", "IDX"),
        ("LCS", "key1", "key2", "IDX", "MINMATCHLEN", -5), ("LCS", "key1", "key2", "MINMATCHLEN", 2),
        ("LCS", "key1", "key2", "MINMATCHLEN", "x"), ("LCS", "key1", "key2", "MINMATCHLEN"),
        ("LCS", "key1", "key2", "BOGUS"), ("LCS", "key1", "missing"),
        ("LCS", "missing", "key1", "IDX"), ("LCS", "missing", "other", "LEN"),
        ("LCS", "key1", "key1"), ("LCS", "key1"),
        ("MSET", "a", "abcabcabcxyz", "b", "cbacbacbaxzy"), ("LCS", "a", "b"),
        ("LCS", "a", "b", "IDX", "WITHMATCHLEN"), ("LCS", "b", "a", "IDX"),
        ("MSET", "p", BINARY_VALUE, "q", BINARY_KEY), ("LCS", "p", "q"),
        ("LCS", "p", "q", "IDX", "WITHMATCHLEN")],
    "rename_renamenx": [
        ("SET", "a", 1, "EX", 100), ("RENAME", "a", "b"), ("TTL", "b"), ("EXISTS", "a"),
        ("GET", "b"), ("RENAME", "missing", "x"), ("RENAME", "b", "b"), ("GET", "b"),
        ("RENAME", "missing", "missing"), ("SET", "c", 3), ("RENAME", "b", "c"), ("GET", "c"),
        ("TTL", "c"), ("SET", "p", 1, "EX", 100), ("SET", "q", 2), ("RENAME", "q", "p"),
        ("TTL", "p"), ("GET", "p"), ("SET", "x", 1), ("SET", "y", 2), ("RENAMENX", "x", "y"),
        ("GET", "y"), ("RENAMENX", "x", "z"), ("GET", "z"), ("EXISTS", "x"),
        ("RENAMENX", "z", "z"), ("RENAMENX", "missing", "q"), ("RENAME", "a"),
        ("RENAMENX", "a", "b", "c"), ("SET", BINARY_KEY, BINARY_VALUE),
        ("RENAME", BINARY_KEY, "plain"), ("GET", "plain"), ("DBSIZE",)],
    "copy": [
        ("SET", "s", "v", "EX", 100), ("COPY", "s", "d"), ("TTL", "d"), ("GET", "d"),
        ("COPY", "s", "d"), ("SET", "s", "w"), ("COPY", "s", "d", "REPLACE"), ("GET", "d"),
        ("TTL", "d"), ("COPY", "s", "s"), ("COPY", "missing", "d"), ("COPY", "missing", "new"),
        ("EXISTS", "new"), ("COPY", "s", "d", "DB", 0), ("COPY", "s", "e", "DB", 0), ("GET", "e"),
        ("COPY", "s", "e", "DB", 1), ("COPY", "s", "e", "DB", -1), ("COPY", "s", "e", "DB", "x"),
        ("COPY", "s", "e", "DB", 99999999999), ("COPY", "s", "e", "DB"),
        ("COPY", "s", "e", "BOGUS"), ("COPY", "s", "s", "DB", 0),
        ("COPY", "s", "f", "replace", "REPLACE"), ("GET", "f"), ("COPY", "s"), ("DBSIZE",)],
    "randomkey": [("RANDOMKEY",), ("SET", "only", "v"), ("RANDOMKEY",), ("RANDOMKEY", "x"),
                  ("SET", "gone", "v", "PX", 1), Sleep(0.05), ("DEL", "only"), ("RANDOMKEY",)],
    "time_lastsave": [("TIME",), ("LASTSAVE",), ("TIME", "x"), ("LASTSAVE", "x")],
    "memory_usage": [
        ("SET", "k", "v"), ("MEMORY", "USAGE", "k"), ("MEMORY", "USAGE", "missing"),
        ("MEMORY", "USAGE", "k", "SAMPLES", 5), ("MEMORY", "USAGE", "k", "SAMPLES", 0),
        ("MEMORY", "USAGE", "k", "SAMPLES", "x"), ("MEMORY", "USAGE", "k", "SAMPLES", -1),
        ("MEMORY", "USAGE", "k", "SAMPLES"), ("MEMORY", "USAGE", "k", "BOGUS"),
        ("MEMORY", "USAGE"), ("MEMORY",), ("MEMORY", "NOSUCH")],
    "reset": [
        ("SET", "k", "v"), ("MULTI",), ("SET", "x", 1), ("RESET",), ("EXEC",), ("GET", "x"),
        ("CLIENT", "SETNAME", "n"), ("RESET",), ("CLIENT", "GETNAME"), ("HELLO", 3),
        ("RESET",), ("GET", "missing"), ("RESET", "x"), ("MULTI",), ("RESET", "x"), ("EXEC",),
        ("PING",)],
    "client_list_filters": [
        ("CLIENT", "LIST"), ("CLIENT", "LIST", "TYPE", "normal"), ("CLIENT", "LIST", "TYPE", "NORMAL"),
        ("CLIENT", "LIST", "TYPE", "replica"), ("CLIENT", "LIST", "TYPE", "slave"),
        ("CLIENT", "LIST", "TYPE", "pubsub"), ("CLIENT", "LIST", "TYPE", "master"),
        ("CLIENT", "LIST", "TYPE", "bogus"), ("CLIENT", "LIST", "ID", 999999),
        ("CLIENT", "LIST", "ID", 999998, 999999), ("CLIENT", "LIST", "ID", "abc"),
        ("CLIENT", "LIST", "ID"), ("CLIENT", "LIST", "TYPE"), ("CLIENT", "LIST", "BOGUS", "x"),
        ("CLIENT", "LIST", "TYPE", "normal", "x"), ("CLIENT", "INFO")],
    # --- transactions (redis-py's default pipeline and Django's set_many use MULTI/EXEC) ----
    "multi_exec": [
        ("MULTI",), ("SET", "k", "v"), ("INCR", "n"), ("GET", "k"), ("GET", "missing"),
        ("SET", "k", "w", "GET"), ("EXPIRE", "k", 100), ("PING",), ("EXEC",), ("TTL", "k"),
        ("MULTI",), ("EXEC",), ("EXEC",), ("DISCARD",), ("MULTI", "extra"),
        ("MULTI",), ("MULTI",), ("SET", "a", 1), ("DISCARD",), ("GET", "a"), ("DISCARD",)],
    "multi_with_connection_commands": [
        ("SET", "a", 1), ("MULTI",), ("SELECT", 0), ("CLIENT", "SETNAME", "tx"), ("PING",),
        ("ECHO", "e"), ("DBSIZE",), ("KEYS", "*"), ("SCAN", 0), ("TYPE", "a"), ("FLUSHALL",),
        ("EXISTS", "a"), ("EXEC",), ("CLIENT", "GETNAME"), ("MULTI",), ("WATCH", "a"),
        ("EXEC",), ("UNWATCH",), ("MULTI",), ("UNWATCH",), ("PING",), ("EXEC",)],
    "multi_queue_errors_abort": [
        ("MULTI",), ("SET", "a", 1), ("GET",), ("SET", "b", 2), ("EXEC",), ("MGET", "a", "b"),
        ("MULTI",), ("SET", "a", 1), ("NOSUCHCOMMAND", "x"), ("EXEC",), ("EXISTS", "a"),
        ("MULTI",), ("SET", "a", 1), ("EXEC", "extra"), ("EXEC",), ("GET", "a")],
    "multi_runtime_errors_do_not_abort": [
        ("SET", "s", "text"), ("MULTI",), ("INCR", "s"), ("SET", "t", "1"),
        ("SET", "u", "v", "EX", 0), ("INCRBY", "t", "x"), ("APPEND", "s", "!"), ("EXEC",),
        ("MGET", "s", "t", "u")],
    # Null and non-null replies of every kind, and switching protocol mid-connection.
    "null_replies_and_protocol_switch": [
        ("SET", "k", "v"), ("GET", "k"), ("GET", "missing"), ("MGET", "k", "missing"),
        ("SET", "k", "v", "NX"), ("SET", "k", "v2", "GET"), ("SET", "m", "v", "XX", "GET"),
        ("GETDEL", "missing"), ("GETEX", "missing"), ("INCR", "n"), ("TTL", "k"),
        ("EXISTS", "k"), ("CLIENT", "GETNAME"), ("TYPE", "k"), ("PING",), ("ECHO", "x"),
        ("KEYS", "*"), ScanAll(), ScanAll("COUNT", 1), ("STRLEN", "k"),
        ("GET",), ("INCR", "k"), ("HELLO", 3), ("HELLO", 2), ("GET", "missing")],
}
