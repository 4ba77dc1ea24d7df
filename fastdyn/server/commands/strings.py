"""Strings and counters: GET, SET and their variants, APPEND, ranges, LCS, INCR ... (Redis'
t_string.c)."""
from fastdyn._commands import FAST_GET, FAST_SET
from fastdyn._lcs import lcs
from fastdyn._resp import incr_float
from fastdyn.cluster.coordinator import DELETE, KEEP
from fastdyn.pending import Pending
from fastdyn.errors import CommandError
from fastdyn.server.commands.registry import (ERR_SYNTAX, LLONG_MAX, LLONG_MIN, CommandGroup,
                                              bulk, int_arg, integer, ok, reply_result, then,
                                              wrong_arity_error)

string = CommandGroup("string")
command = string.command

ONE_KEY = (1, 1, 1)
ALL_KEYS = (1, -1, 1)
KEY_VALUE_PAIRS = (1, -1, 2)


def check_value(conn, value):
    if len(value) > conn.server.config.max_value_bytes:
        raise CommandError("ERR value is larger than max-value-bytes (%d bytes)"
                           % conn.server.config.max_value_bytes)


def check_length(config, length):
    """A string that grows in place (SETRANGE, SETBIT, APPEND) stays within the bulk limit
    (Redis' check and text) and the largest value the store keeps."""
    if length > config.max_bulk_bytes:
        raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    if length > config.max_value_bytes:
        raise CommandError("ERR string exceeds maximum allowed size (max-value-bytes)")


def _expire_at(cmd: str, amount: bytes, unit_ms: int, absolute: bool, now: int) -> int:
    """An absolute expiry in ms from EX/PX/EXAT/PXAT-style arguments; Redis' checks and texts."""
    n = int_arg(amount)
    if n <= 0 or (unit_ms == 1000 and n > LLONG_MAX // 1000):
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    ms = n * unit_ms
    if not absolute:
        ms += now
        if ms > LLONG_MAX:
            raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    return ms


@command("get", 2, "readonly fast", ONE_KEY, "Returns the string value of a key.", FAST_GET)
def cmd_get(conn, args):
    reply_result(conn, conn.coord.get(args[1]), conn.keyspace.bulk_lookup)


@command("mget", -2, "readonly fast", ALL_KEYS,
         "Atomically returns the string values of one or more keys.")
def cmd_mget(conn, args):
    reply_result(conn, conn.coord.get_many(args[1:]), conn.keyspace.bulks_lookup)


@command("set", -3, "write denyoom", ONE_KEY,
         "Sets the string value of a key, ignoring its type. The key is created if it doesn't "
         "exist.", FAST_SET)
def cmd_set(conn, args):
    value = args[2]
    if len(value) > conn.server.config.max_value_bytes:
        check_value(conn, value)
    if len(args) == 3:
        result = conn.coord.put(args[1], value, 0)
        if result.__class__ is Pending:
            conn.defer(result, ok)
        else:
            conn.out.ok()
        return
    cond, get, expiry, keepttl, seen_expire = None, False, 0, False, False
    i, n = 3, len(args)
    while i < n:
        opt = args[i].lower()
        has_next = i + 1 < n
        if opt == b"nx" and cond != b"xx":
            cond = b"nx"
        elif opt == b"xx" and cond != b"nx":
            cond = b"xx"
        elif opt == b"get":
            get = True
        elif opt == b"keepttl" and not seen_expire:
            keepttl = True
        elif opt in (b"ex", b"px", b"exat", b"pxat") and not keepttl and has_next and \
                (seen_expire is False or seen_expire == opt):
            seen_expire = opt
            i += 1
            expiry = (opt, args[i])
        else:
            raise CommandError(ERR_SYNTAX)
        i += 1
    if seen_expire:
        opt, amount = expiry
        expiry = _expire_at("set", amount, 1000 if opt in (b"ex", b"exat") else 1,
                            opt in (b"exat", b"pxat"), conn.coord.clock())
    if cond is None and not get and not keepttl:
        reply_result(conn, conn.coord.put(args[1], value, expiry), ok)
        return

    def decide(current, current_expiry, now):
        if (cond == b"nx" and current is not None) or (cond == b"xx" and current is None):
            return KEEP, (current if get else None)
        new_expiry = current_expiry if keepttl and current is not None else expiry
        return (value, new_expiry), (current if get else b"OK")

    def encode(out, reply):
        if get:
            conn.keyspace.count((reply,))
        if reply is None or get:
            out.bulk(reply)
        else:
            out.ok()

    reply_result(conn, conn.coord.update(args[1], decide), encode)


def _set_with_expiry(name, unit_ms, summary):
    def cmd(conn, args):
        expiry = _expire_at(name, args[2], unit_ms, False, conn.coord.clock())
        check_value(conn, args[3])
        reply_result(conn, conn.coord.put(args[1], args[3], expiry), ok)

    string.add(name, cmd, 4, "write denyoom", ONE_KEY, summary)


_set_with_expiry("setex", 1000, "Sets the string value and expiration time of a key. Creates "
                                "the key if it doesn't exist.")
_set_with_expiry("psetex", 1, "Sets both string value and expiration time in milliseconds of a "
                              "key. The key is created if it doesn't exist.")


@command("setnx", 3, "write denyoom fast", ONE_KEY,
         "Set the string value of a key only when the key doesn't exist.")
def cmd_setnx(conn, args):
    value = args[2]
    check_value(conn, value)

    def decide(current, current_expiry, now):
        if current is not None:
            return KEEP, 0
        return (value, 0), 1

    reply_result(conn, conn.coord.update(args[1], decide), integer)


@command("getset", 3, "write denyoom fast", ONE_KEY,
         "Returns the previous string value of a key after setting it to a new value.")
def cmd_getset(conn, args):
    value = args[2]
    check_value(conn, value)
    reply_result(conn, conn.coord.update(args[1], lambda cur, exp, now: ((value, 0), cur)),
                 conn.keyspace.bulk_lookup)


@command("getdel", 2, "write fast", ONE_KEY,
         "Returns the string value of a key after deleting the key.")
def cmd_getdel(conn, args):
    reply_result(conn, conn.coord.update(args[1], lambda cur, exp, now: (DELETE, cur)),
                 conn.keyspace.bulk_lookup)


@command("getex", -2, "write fast", ONE_KEY,
         "Returns the string value of a key after setting its expiration time.")
def cmd_getex(conn, args):
    mode, amount = None, None
    i, n = 2, len(args)
    while i < n:
        opt = args[i].lower()
        if opt in (b"ex", b"px", b"exat", b"pxat") and mode is None and i + 1 < n:
            mode, amount = opt, args[i + 1]
            i += 2
        elif opt == b"persist" and mode is None:
            mode = opt
            i += 1
        else:
            raise CommandError(ERR_SYNTAX)
    if mode is None:
        reply_result(conn, conn.coord.get(args[1]), conn.keyspace.bulk_lookup)
        return

    def decide(current, current_expiry, now):
        # Redis looks the key up first: a missing key answers nil whatever the expiry says
        if current is None:
            return KEEP, None
        if mode == b"persist":
            return (KEEP, current) if not current_expiry else ((current, 0), current)
        expiry = _expire_at("getex", amount, 1000 if mode in (b"ex", b"exat") else 1,
                            mode in (b"exat", b"pxat"), now)
        return (current, expiry), current

    reply_result(conn, conn.coord.update(args[1], decide), conn.keyspace.bulk_lookup)


def _pairs(conn, args, name):
    if len(args) % 2 == 0:
        raise CommandError(wrong_arity_error(name))
    pairs = list(zip(args[1::2], args[2::2]))
    for _, value in pairs:
        check_value(conn, value)
    return pairs


@command("mset", -3, "write denyoom", KEY_VALUE_PAIRS,
         "Atomically creates or modifies the string values of one or more keys.")
def cmd_mset(conn, args):
    reply_result(conn, conn.coord.put_many(_pairs(conn, args, "mset")), ok)


@command("msetnx", -3, "write denyoom", KEY_VALUE_PAIRS,
         "Atomically modifies the string values of one or more keys only when all keys don't "
         "exist.")
def cmd_msetnx(conn, args):
    pairs = _pairs(conn, args, "msetnx")
    keys = [k for k, _ in pairs]

    def set_all(coord):
        return then(coord.exists(keys),
                    lambda found: 0 if found else then(coord.put_many(pairs), lambda _: 1))

    reply_result(conn, conn.coord.compound(keys, set_all), integer)


@command("append", 3, "write denyoom fast", ONE_KEY,
         "Appends a string to the value of a key. Creates the key if it doesn't exist.")
def cmd_append(conn, args):
    suffix = args[2]
    config = conn.server.config

    def decide(current, current_expiry, now):
        value = suffix if current is None else current + suffix
        check_length(config, len(value))
        return (value, current_expiry if current is not None else 0), len(value)

    reply_result(conn, conn.coord.update(args[1], decide), integer)


@command("strlen", 2, "readonly fast", ONE_KEY, "Returns the length of a string value.")
def cmd_strlen(conn, args):
    def encode(out, value):
        conn.keyspace.count((value,))
        out.integer(len(value) if value else 0)

    reply_result(conn, conn.coord.get(args[1]), encode)


def _getrange(conn, args):
    start, end = int_arg(args[2]), int_arg(args[3])

    def encode(out, value):
        conn.keyspace.count((value,))
        if value is None or (start < 0 and end < 0 and start > end):
            out.bulk(b"")
            return
        n = len(value)
        first = max(start + n if start < 0 else start, 0)
        last = min(max(end + n if end < 0 else end, 0), n - 1)
        out.bulk(value[first:last + 1] if first <= last else b"")

    reply_result(conn, conn.coord.get(args[1]), encode)


string.add("getrange", _getrange, 4, "readonly", ONE_KEY,
           "Returns a substring of the string stored at a key.")
string.add("substr", _getrange, 4, "readonly", ONE_KEY,
           "Returns a substring from a string value.")


@command("setrange", 4, "write denyoom", ONE_KEY,
         "Overwrites a part of a string value with another by an offset. Creates the key if it "
         "doesn't exist.")
def cmd_setrange(conn, args):
    offset, part = int_arg(args[2]), args[3]
    if offset < 0:
        raise CommandError("ERR offset is out of range")
    config = conn.server.config

    def decide(current, current_expiry, now):
        if not part:
            return KEEP, len(current) if current is not None else 0
        check_length(config, offset + len(part))
        if current is None:
            return (bytes(offset) + part, 0), offset + len(part)
        head = current[:offset]
        value = head + bytes(offset - len(head)) + part + current[offset + len(part):]
        return (value, current_expiry), len(value)

    reply_result(conn, conn.coord.update(args[1], decide), integer)


@command("lcs", -3, "readonly", (1, 2, 1), "Finds the longest common substring.")
def cmd_lcs(conn, args):
    coord = conn.coord
    config = conn.server.config

    def compare(values):
        conn.keyspace.count(values)
        a, b = (v if v is not None else b"" for v in values)
        want_len = want_idx = with_len = False
        min_len, i = 0, 3
        while i < len(args):
            opt = args[i].lower()
            if opt == b"idx":
                want_idx = True
            elif opt == b"len":
                want_len = True
            elif opt == b"withmatchlen":
                with_len = True
            elif opt == b"minmatchlen" and i + 1 < len(args):
                i += 1
                min_len = max(int_arg(args[i]), 0)
            else:
                raise CommandError(ERR_SYNTAX)
            i += 1
        if want_idx and want_len:
            raise CommandError("ERR If you want both the length and indexes, please just use "
                               "IDX.")
        if (len(a) + 1) * (len(b) + 1) * 4 > config.max_bulk_bytes:
            raise CommandError("ERR Insufficient memory, transient memory for LCS exceeds "
                               "proto-max-bulk-len")
        return want_len, want_idx, with_len, lcs(a, b, min_len if want_idx else None)

    def encode(out, result):
        want_len, want_idx, with_len, (text, ranges) = result
        if want_idx:
            out.map(2)
            out.bulk(b"matches")
            out.array(len(ranges))
            for a_start, a_end, b_start, b_end in ranges:
                out.array(3 if with_len else 2)
                out.array(2), out.integer(a_start), out.integer(a_end)
                out.array(2), out.integer(b_start), out.integer(b_end)
                if with_len:
                    out.integer(a_end - a_start + 1)
            out.bulk(b"len")
            out.integer(len(text))
        elif want_len:
            out.integer(len(text))
        else:
            out.bulk(text)

    reply_result(conn, then(coord.get_many([args[1], args[2]]), compare), encode)


# -- counters ---------------------------------------------------------------------------------

def _incr_command(name, sign, summary):
    """INCR/DECR (sign, no argument) and INCRBY/DECRBY (sign times the argument)."""
    def cmd(conn, args):
        if len(args) == 2:
            delta = sign
        else:
            delta = int_arg(args[2])
            if sign < 0:
                if delta == LLONG_MIN:
                    raise CommandError("ERR decrement would overflow")
                delta = -delta
        reply_result(conn, conn.coord.incr(args[1], delta), integer)

    string.add(name, cmd, 3 if name.endswith("by") else 2, "write denyoom fast", ONE_KEY,
               summary)


_incr_command("incr", 1, "Increments the integer value of a key by one. Uses 0 as initial value "
                         "if the key doesn't exist.")
_incr_command("decr", -1, "Decrements the integer value of a key by one. Uses 0 as initial value "
                          "if the key doesn't exist.")
_incr_command("incrby", 1, "Increments the integer value of a key by a number. Uses 0 as "
                           "initial value if the key doesn't exist.")
_incr_command("decrby", -1, "Decrements a number from the integer value of a key. Uses 0 as "
                            "initial value if the key doesn't exist.")


@command("incrbyfloat", 3, "write denyoom fast", ONE_KEY,
         "Increment the floating point value of a key by a number. Uses 0 as initial value if "
         "the key doesn't exist.")
def cmd_incrbyfloat(conn, args):
    increment = args[2]

    def decide(current, current_expiry, now):
        try:
            value = incr_float(current, increment)
        except ValueError as exc:  # its text is Redis' whole error line
            raise CommandError(str(exc)) from None
        return (value, current_expiry if current is not None else 0), value

    reply_result(conn, conn.coord.update(args[1], decide), bulk)
