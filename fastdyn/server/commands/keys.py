"""The keyspace and expiry: DEL ... SCAN, RENAME, COPY, RANDOMKEY, EXPIRE ... TTL (Redis' db.c
and expire.c)."""
import random

from fastdyn._glob import GlobPattern
from fastdyn._resp import parse_int
from fastdyn.cluster.coordinator import DELETE, KEEP
from fastdyn.errors import CommandError
from fastdyn.server.commands.registry import (ERR_SYNTAX, LLONG_MAX, LLONG_MIN, CommandGroup,
                                              int_arg, integer, reply_result, then)

generic = CommandGroup("generic")
command = generic.command

ALL_KEYS = (1, -1, 1)
ONE_KEY = (1, 1, 1)
TWO_KEYS = (1, 2, 1)


@command("del", -2, "write", ALL_KEYS, "Deletes one or more keys.")
def cmd_del(conn, args):
    reply_result(conn, conn.coord.delete(args[1:]), integer)


generic.add("unlink", cmd_del, -2, "write fast", ALL_KEYS,
            "Asynchronously deletes one or more keys.")


@command("exists", -2, "readonly fast", ALL_KEYS, "Determines whether one or more keys exist.")
def cmd_exists(conn, args):
    def encode(out, found):
        conn.keyspace.count([b""] * found + [None] * (len(args) - 1 - found))
        out.integer(found)

    reply_result(conn, conn.coord.exists(args[1:]), encode)


generic.add("touch", cmd_exists, -2, "readonly fast", ALL_KEYS,
            "Returns the number of existing keys out of those specified after updating the time "
            "they were last accessed.")


@command("type", 2, "readonly fast", ONE_KEY, "Determines the type of value stored at a key.")
def cmd_type(conn, args):
    def encode(out, expiry):
        conn.keyspace.count((expiry,))
        out.simple("none" if expiry is None else "string")

    reply_result(conn, conn.coord.expiry(args[1]), encode)


@command("keys", 2, "readonly", summary="Returns all key names that match a pattern.")
def cmd_keys(conn, args):
    pattern = GlobPattern(args[1])
    reply_result(conn, conn.coord.keys(), lambda out, keys: out.bulks(pattern.filter(keys)))


@command("scan", -2, "readonly", summary="Iterates over the key names in the database.")
def cmd_scan(conn, args):
    cursor = parse_int(args[1]) if args[1][:1] != b"-" else None
    if cursor is None:
        # Redis reads the cursor as an unsigned 64-bit number
        if args[1].isdigit() and int(args[1]) < 1 << 64:
            cursor = int(args[1])
        else:
            raise CommandError("ERR invalid cursor")
    count, pattern, type_filter = 10, None, None
    i = 2
    while i < len(args):
        opt = args[i].lower()
        if i + 1 >= len(args):
            raise CommandError(ERR_SYNTAX)
        if opt == b"count":
            count = int_arg(args[i + 1])
            if count < 1:
                raise CommandError(ERR_SYNTAX)
        elif opt == b"match":
            pattern = GlobPattern(args[i + 1])
        elif opt == b"type":
            type_filter = args[i + 1].lower()
        else:
            raise CommandError(ERR_SYNTAX)
        i += 2

    def encode(out, result):
        cursor, keys = result
        if pattern is not None:
            keys = pattern.filter(keys)
        if type_filter is not None and type_filter != b"string":
            keys = []
        out.array(2)
        out.bulk(b"%d" % cursor)
        out.bulks(keys)

    reply_result(conn, conn.coord.scan(cursor, count), encode)


@command("randomkey", 1, "readonly", summary="Returns a random key name from the database.")
def cmd_randomkey(conn, args):
    # SCAN cursors are hash values: start at a random one, wrap around to 0 past the end
    start = random.getrandbits(64)

    def pick(coord):
        def found(result):
            keys = result[1]
            if keys or start == 0:
                return keys[0] if keys else None
            return then(coord.scan(0, 1), lambda r: r[1][0] if r[1] else None)

        return then(coord.scan(start, 1), found)

    reply_result(conn, conn.coord.compound(None, pick), lambda out, key: out.bulk(key))


def _rename(conn, args, nx):
    src, dst = args[1], args[2]

    def move(coord, entry):
        if entry is None:
            raise CommandError("ERR no such key")
        if src == dst:
            return 0 if nx else b"OK"
        value, expiry = entry

        def write(dst_expiry):
            if nx and dst_expiry is not None:
                return 0
            # the TTL travels with the value, as in Redis
            return then(coord.put(dst, value, expiry),
                        lambda _: then(coord.delete([src]), lambda _: 1 if nx else b"OK"))

        return then(coord.expiry(dst), write) if nx else write(None)

    def encode(out, reply):
        if nx:
            out.integer(reply)
        else:
            out.ok()

    reply_result(conn, conn.coord.compound(
        (src, dst), lambda coord: then(coord.get_entry(src), lambda e: move(coord, e))), encode)


@command("rename", 3, "write", TWO_KEYS, "Renames a key and overwrites the destination.")
def cmd_rename(conn, args):
    _rename(conn, args, False)


@command("renamenx", 3, "write fast", TWO_KEYS,
         "Renames a key only when the target key name doesn't exist.")
def cmd_renamenx(conn, args):
    _rename(conn, args, True)


@command("copy", -3, "write denyoom", TWO_KEYS, "Copies the value of a key to a new key.")
def cmd_copy(conn, args):
    src, dst = args[1], args[2]
    replace, i = False, 3
    while i < len(args):
        opt = args[i].lower()
        if opt == b"replace":
            replace = True
        elif opt == b"db" and i + 1 < len(args):
            i += 1
            db = int_arg(args[i])
            if not -(1 << 31) <= db < 1 << 31:
                raise CommandError("ERR value is out of range, value must between -2147483648 "
                                   "and 2147483647")
            if db != 0:
                raise CommandError("ERR DB index is out of range")
        else:
            raise CommandError(ERR_SYNTAX)
        i += 1
    if src == dst:
        raise CommandError("ERR source and destination objects are the same")

    def copy(coord, entry):
        conn.keyspace.count((entry,))
        if entry is None:
            return 0
        value, expiry = entry

        def write(dst_expiry):
            if dst_expiry is not None and not replace:
                return 0
            return then(coord.put(dst, value, expiry), lambda _: 1)

        return write(None) if replace else then(coord.expiry(dst), write)

    reply_result(conn, conn.coord.compound(
        (src, dst), lambda coord: then(coord.get_entry(src), lambda e: copy(coord, e))), integer)


# -- expiry -----------------------------------------------------------------------------------

def _expire(conn, args, cmd, unit_ms, absolute):
    n = int_arg(args[2])
    nx = xx = gt = lt = False
    for opt in args[3:]:
        o = opt.lower()
        if o == b"nx":
            nx = True
        elif o == b"xx":
            xx = True
        elif o == b"gt":
            gt = True
        elif o == b"lt":
            lt = True
        else:
            raise CommandError("ERR Unsupported option %s" % opt.decode("utf-8", "replace"))
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    if unit_ms == 1000 and not -LLONG_MAX // 1000 <= n <= LLONG_MAX // 1000:
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    when = n * unit_ms
    if not absolute:
        when += conn.coord.clock()
    if not LLONG_MIN <= when <= LLONG_MAX:
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")

    def decide(current, current_expiry, now):
        if current is None:
            return KEEP, 0
        if nx and current_expiry:
            return KEEP, 0
        if xx and not current_expiry:
            return KEEP, 0
        if gt and (not current_expiry or when <= current_expiry):
            return KEEP, 0
        if lt and current_expiry and when >= current_expiry:
            return KEEP, 0
        if when <= now:
            return DELETE, 1
        return (current, when), 1

    reply_result(conn, conn.coord.update(args[1], decide), integer)


def _expire_command(name, unit_ms, absolute, summary):
    generic.add(name, lambda conn, args: _expire(conn, args, name, unit_ms, absolute), -3,
                "write fast", ONE_KEY, summary)


_expire_command("expire", 1000, False, "Sets the expiration time of a key in seconds.")
_expire_command("pexpire", 1, False, "Sets the expiration time of a key in milliseconds.")
_expire_command("expireat", 1000, True,
                "Sets the expiration time of a key to a Unix timestamp.")
_expire_command("pexpireat", 1, True,
                "Sets the expiration time of a key to a Unix milliseconds timestamp.")


@command("persist", 2, "write fast", ONE_KEY, "Removes the expiration time of a key.")
def cmd_persist(conn, args):
    def decide(current, current_expiry, now):
        if current is None or not current_expiry:
            return KEEP, 0
        return (current, 0), 1

    reply_result(conn, conn.coord.update(args[1], decide), integer)


def _ttl(conn, key, relative, ms):
    now = conn.coord.clock()

    def encode(out, expiry):
        conn.keyspace.count((expiry,))
        if expiry is None:
            out.integer(-2)
        elif not expiry:
            out.integer(-1)
        elif relative:
            left = max(expiry - now, 0)
            out.integer(left if ms else (left + 500) // 1000)
        else:
            out.integer(expiry if ms else (expiry + 500) // 1000)

    reply_result(conn, conn.coord.expiry(key), encode)


def _ttl_command(name, relative, ms, summary):
    generic.add(name, lambda conn, args: _ttl(conn, args[1], relative, ms), 2,
                "readonly fast", ONE_KEY, summary)


_ttl_command("ttl", True, False, "Returns the expiration time in seconds of a key.")
_ttl_command("pttl", True, True, "Returns the expiration time in milliseconds of a key.")
_ttl_command("expiretime", False, False,
             "Returns the expiration time of a key as a Unix timestamp.")
_ttl_command("pexpiretime", False, True,
             "Returns the expiration time of a key as a Unix milliseconds timestamp.")
