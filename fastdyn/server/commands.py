"""The Redis command set fastdyn serves: arity, options, semantics and error texts of Redis 7.

Each command is a function `(conn, args)` that writes its reply into `conn.out` (a
ReplyWriter). Data goes through `conn.coord` (the coordinator) only; a result that arrives later
(a `Pending`) is handed to `conn.defer(pending, encode)` which keeps the reply's place in line.
Read-modify-write commands are one `coord.update(key, fn)` with a pure `fn`, counters one
`coord.incr`. `COMMANDS` maps the lower- and upper-case name to (function, arity, allowed before
AUTH, name, fast op); arity follows Redis: n > 0 exactly n arguments with the name, n < 0 at
least -n. A fast op marks the commands fastdyn._commands runs inline (its function serves the
forms the fast path does not take, and EXEC).
"""
from fastdyn import __version__
from fastdyn._glob import GlobPattern
from fastdyn._commands import FAST_GET, FAST_NONE, FAST_SET, count_lookups
from fastdyn._resp import incr_float, parse_int
from fastdyn.cluster.coordinator import DELETE, KEEP, Pending
from fastdyn.errors import CommandError

_LLONG_MAX = (1 << 63) - 1
_LLONG_MIN = -(1 << 63)

ERR_SYNTAX = "ERR syntax error"
ERR_NOT_INT = "ERR value is not an integer or out of range"

COMMANDS = {}


def command(name, arity, before_auth=False, fast=FAST_NONE):
    def register(fn):
        spec = (fn, arity, before_auth, name, fast)
        COMMANDS[name.encode()] = spec
        COMMANDS[name.upper().encode()] = spec
        return fn
    return register


def find_command(name: bytes):
    """The spec for a command name in any letter case, or None."""
    return COMMANDS.get(name.lower())


def unknown_command_error(args) -> str:
    """Redis 7's text: the name, then quoted arguments until 128 characters are used."""
    tail = ""
    for a in args[1:]:
        if len(tail) >= 128:
            break
        tail += "'%s' " % a.decode("utf-8", "replace")[:128 - len(tail)]
    return "ERR unknown command '%s', with args beginning with: %s" % (
        args[0].decode("utf-8", "replace")[:128], tail)


def wrong_arity_error(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


def _int_arg(b: bytes) -> int:
    n = parse_int(b)
    if n is None:
        raise CommandError(ERR_NOT_INT)
    return n


def _reply_result(conn, result, encode) -> None:
    """Encode a direct result now, or keep the reply's slot until a Pending completes."""
    if result.__class__ is Pending:
        conn.defer(result, encode)
    else:
        encode(conn.out, result)


def _then(result, fn):
    """fn(result) now, or once a Pending completes (a failure passes through unchanged); fn
    may itself return a Pending. Chains the steps of a command that needs two operations."""
    if result.__class__ is not Pending:
        return fn(result)
    chained = Pending()

    def done(value):
        if isinstance(value, CommandError):
            chained.complete(value)
            return
        try:
            nxt = fn(value)
        except CommandError as exc:
            chained.complete(exc)
            return
        if nxt.__class__ is Pending:
            nxt.add_done_callback(chained.complete)
        else:
            chained.complete(nxt)

    result.add_done_callback(done)
    return chained


def _bulk(out, value):
    out.bulk(value)


def _integer(out, n):
    out.integer(n)


def _ok(out, _):
    out.ok()


# Encoders of reading commands also count keyspace hits and misses, as Redis does.
def _bulk_lookup(out, value):
    count_lookups((value,))
    out.bulk(value)


def _bulks_lookup(out, values):
    count_lookups(values)
    out.bulks(values)


# -- connection -------------------------------------------------------------------------------

@command("ping", -1, before_auth=False)
def cmd_ping(conn, args):
    if len(args) > 2:
        raise CommandError(wrong_arity_error("ping"))
    if len(args) == 2:
        conn.out.bulk(args[1])
    else:
        conn.out.simple("PONG")


@command("echo", 2)
def cmd_echo(conn, args):
    conn.out.bulk(args[1])


@command("quit", -1, before_auth=True)
def cmd_quit(conn, args):
    conn.out.ok()
    conn.close_after_reply()


@command("select", 2)
def cmd_select(conn, args):
    if _int_arg(args[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    conn.out.ok()


@command("auth", -2, before_auth=True)
def cmd_auth(conn, args):
    if len(args) > 3:
        raise CommandError(ERR_SYNTAX)
    if len(args) == 2 and not conn.server.config.requirepass:
        raise CommandError("ERR AUTH <password> called without any password configured for "
                           "the default user. Are you sure your configuration is correct?")
    user = args[1] if len(args) == 3 else b"default"
    conn.authenticate(user, args[-1])
    conn.out.ok()


@command("hello", -1, before_auth=True)
def cmd_hello(conn, args):
    proto = conn.out.proto
    if len(args) > 1:
        proto = parse_int(args[1])
        if proto is None:
            raise CommandError("ERR Protocol version is not an integer or out of range")
        if proto < 2 or proto > 3:
            raise CommandError("NOPROTO unsupported protocol version")
    i, auth, setname = 2, None, None
    while i < len(args):
        opt = args[i].lower()
        more = len(args) - i - 1
        if opt == b"auth" and more >= 2:
            auth = (args[i + 1], args[i + 2])
            i += 3
        elif opt == b"setname" and more >= 1:
            setname = args[i + 1]
            conn.check_name(setname)  # before AUTH: a HELLO that fails changes nothing
            i += 2
        else:
            raise CommandError("ERR Syntax error in HELLO option '%s'"
                               % args[i].decode("utf-8", "replace"))
    if auth is not None:
        conn.authenticate(*auth)
    elif not conn.authenticated:
        raise CommandError("NOAUTH HELLO must be called with the client already authenticated, "
                           "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                           "authenticate the client and select the RESP protocol version at the "
                           "same time")
    if setname is not None:
        conn.set_name(setname)
    out = conn.out
    out.proto = proto
    out.map(8)
    out.bulk(b"server"), out.bulk(b"redis")
    out.bulk(b"version"), out.bulk(conn.server.redis_version)
    out.bulk(b"proto"), out.integer(proto)
    out.bulk(b"id"), out.integer(conn.id)
    out.bulk(b"mode"), out.bulk(b"standalone")
    out.bulk(b"role"), out.bulk(b"master")
    out.bulk(b"modules"), out.array(0)
    out.bulk(b"fastdyn_version"), out.bulk(__version__)


@command("client", -2)
def cmd_client(conn, args):
    sub = args[1].lower()
    n = len(args)
    out = conn.out
    if sub == b"id" and n == 2:
        out.integer(conn.id)
    elif sub == b"setname" and n == 3:
        conn.set_name(args[2])
        out.ok()
    elif sub == b"getname" and n == 2:
        out.bulk(conn.name or None)
    elif sub == b"setinfo" and n == 4:
        attr = args[2].lower()
        if attr not in (b"lib-name", b"lib-ver"):
            raise CommandError("ERR Unrecognized option '%s'" % args[2].decode("utf-8", "replace"))
        if any(c < 33 or c > 126 for c in args[3]):
            raise CommandError("ERR %s cannot contain spaces, newlines or special characters."
                               % attr.decode())
        conn.lib[attr] = args[3]
        out.ok()
    elif sub == b"info" and n == 2:
        out.bulk(conn.describe() + "\n")
    elif sub == b"list" and n == 2:
        out.bulk("".join(c.describe() + "\n" for c in conn.server.clients))
    elif sub in (b"id", b"setname", b"getname", b"setinfo", b"info", b"list"):
        raise CommandError(wrong_arity_error("client|" + sub.decode()))
    else:
        raise CommandError("ERR unknown subcommand '%s'. Try CLIENT HELP."
                           % args[1].decode("utf-8", "replace"))


@command("info", -1)
def cmd_info(conn, args):
    from fastdyn.server.info import info_text
    conn.out.verbatim(info_text(conn.server, [a.decode("utf-8", "replace").lower()
                                              for a in args[1:]]))


@command("command", -1)
def cmd_command(conn, args):
    out = conn.out
    names = sorted({spec[3] for spec in COMMANDS.values()})
    sub = args[1].lower() if len(args) > 1 else None
    if sub is None:
        out.array(len(names))
        for name in names:
            _command_info(out, COMMANDS[name.encode()])
    elif sub == b"count" and len(args) == 2:
        out.integer(len(names))
    elif sub == b"list" and len(args) == 2:
        out.bulks([n.encode() for n in names])
    elif sub == b"info":
        out.array(len(args) - 2)
        for name in args[2:]:
            spec = find_command(name)
            if spec is None:
                out.null_array()
            else:
                _command_info(out, spec)
    elif sub == b"docs":
        wanted = [find_command(a) for a in args[2:]] if len(args) > 2 else \
            [COMMANDS[n.encode()] for n in names]
        wanted = [spec for spec in wanted if spec is not None]
        out.map(len(wanted))
        for spec in wanted:
            out.bulk(spec[3])
            out.map(1)
            out.bulk(b"summary")
            out.bulk((spec[0].__doc__ or "").strip().split("\n")[0])
    else:
        raise CommandError("ERR unknown subcommand '%s'. Try COMMAND HELP."
                           % args[1].decode("utf-8", "replace"))


def _command_info(out, spec):
    fn, arity, _, name, _ = spec
    keyed = name not in _KEYLESS
    out.array(6)
    out.bulk(name)
    out.integer(arity)
    out.set(0)
    out.integer(1 if keyed else 0)
    out.integer((-1 if arity < 0 and name in _MULTIKEY else 1) if keyed else 0)
    out.integer((2 if name in ("mset", "msetnx") else 1) if keyed else 0)


_KEYLESS = {"ping", "echo", "quit", "select", "auth", "hello", "client", "info", "command",
            "config", "dbsize", "flushdb", "flushall", "scan", "keys"}
_MULTIKEY = {"mget", "mset", "msetnx", "del", "unlink", "exists", "touch"}


@command("config", -2)
def cmd_config(conn, args):
    sub = args[1].lower()
    if sub == b"get" and len(args) >= 3:
        settings = conn.server.config_view()
        found = {}
        for pattern in args[2:]:
            g = GlobPattern(pattern.lower())
            for k, v in settings.items():
                if g.match(k):
                    found[k] = v
        conn.out.map(len(found))
        for k, v in found.items():
            conn.out.bulk(k)
            conn.out.bulk(v)
    elif sub == b"resetstat" and len(args) == 2:
        conn.server.reset_stats()
        conn.out.ok()
    elif sub in (b"get", b"resetstat"):
        raise CommandError(wrong_arity_error("config|" + sub.decode()))
    else:
        raise CommandError("ERR unknown subcommand '%s'. Try CONFIG HELP."
                           % args[1].decode("utf-8", "replace"))


# -- transactions -----------------------------------------------------------------------------

TRANSACTION_CONTROL = frozenset({"multi", "exec", "discard", "quit", "watch", "unwatch"})


@command("multi", 1)
def cmd_multi(conn, args):
    if conn.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    conn.multi = []
    conn.multi_failed = False
    conn.out.ok()


@command("exec", 1)
def cmd_exec(conn, args):
    if conn.multi is None:
        raise CommandError("ERR EXEC without MULTI")
    queued, failed = conn.multi, conn.multi_failed
    conn.multi, conn.multi_failed = None, False
    if failed:
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    conn.run_queued(queued)


@command("discard", 1)
def cmd_discard(conn, args):
    if conn.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    conn.multi, conn.multi_failed = None, False
    conn.out.ok()


@command("watch", -2)
def cmd_watch(conn, args):
    if conn.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    raise CommandError("ERR WATCH is not supported: fastdyn replicates without locks; use "
                       "SET NX/XX or a single MULTI block instead")


@command("unwatch", 1)
def cmd_unwatch(conn, args):
    conn.out.ok()


# -- keyspace ---------------------------------------------------------------------------------

@command("dbsize", 1)
def cmd_dbsize(conn, args):
    _reply_result(conn, conn.coord.size(), _integer)


def _flush(conn, args):
    if len(args) > 2 or (len(args) == 2 and args[1].lower() not in (b"async", b"sync")):
        raise CommandError(ERR_SYNTAX)
    _reply_result(conn, conn.coord.flush(), _ok)


command("flushdb", -1)(_flush)
command("flushall", -1)(_flush)


@command("del", -2)
def cmd_del(conn, args):
    _reply_result(conn, conn.coord.delete(args[1:]), _integer)


command("unlink", -2)(cmd_del)


@command("exists", -2)
def cmd_exists(conn, args):
    def encode(out, found):
        count_lookups([b""] * found + [None] * (len(args) - 1 - found))
        out.integer(found)

    _reply_result(conn, conn.coord.exists(args[1:]), encode)


command("touch", -2)(cmd_exists)


@command("type", 2)
def cmd_type(conn, args):
    def encode(out, expiry):
        count_lookups((expiry,))
        out.simple("none" if expiry is None else "string")

    _reply_result(conn, conn.coord.expiry(args[1]), encode)


@command("keys", 2)
def cmd_keys(conn, args):
    pattern = GlobPattern(args[1])
    _reply_result(conn, conn.coord.keys(), lambda out, keys: out.bulks(pattern.filter(keys)))


@command("scan", -2)
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
            count = _int_arg(args[i + 1])
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

    _reply_result(conn, conn.coord.scan(cursor, count), encode)


# -- strings ----------------------------------------------------------------------------------

@command("get", 2, fast=FAST_GET)
def cmd_get(conn, args):
    _reply_result(conn, conn.coord.get(args[1]), _bulk_lookup)


@command("mget", -2)
def cmd_mget(conn, args):
    _reply_result(conn, conn.coord.get_many(args[1:]), _bulks_lookup)


def _check_value(conn, value):
    if len(value) > conn.server.config.max_value_bytes:
        raise CommandError("ERR value is larger than max-value-bytes (%d bytes)"
                           % conn.server.config.max_value_bytes)


def _expire_at(cmd: str, amount: bytes, unit_ms: int, absolute: bool, now: int) -> int:
    """An absolute expiry in ms from EX/PX/EXAT/PXAT-style arguments; Redis' checks and texts."""
    n = _int_arg(amount)
    if n <= 0 or (unit_ms == 1000 and n > _LLONG_MAX // 1000):
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    ms = n * unit_ms
    if not absolute:
        ms += now
        if ms > _LLONG_MAX:
            raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    return ms


@command("set", -3, fast=FAST_SET)
def cmd_set(conn, args):
    value = args[2]
    if len(value) > conn.server.config.max_value_bytes:
        _check_value(conn, value)
    if len(args) == 3:
        result = conn.coord.put(args[1], value, 0)
        if result.__class__ is Pending:
            conn.defer(result, _ok)
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
        _reply_result(conn, conn.coord.put(args[1], value, expiry), _ok)
        return

    def decide(current, current_expiry, now):
        if (cond == b"nx" and current is not None) or (cond == b"xx" and current is None):
            return KEEP, (current if get else None)
        new_expiry = current_expiry if keepttl and current is not None else expiry
        return (value, new_expiry), (current if get else b"OK")

    def encode(out, reply):
        if get:
            count_lookups((reply,))
        if reply is None or get:
            out.bulk(reply)
        else:
            out.ok()

    _reply_result(conn, conn.coord.update(args[1], decide), encode)


@command("setex", 4)
def cmd_setex(conn, args):
    expiry = _expire_at("setex", args[2], 1000, False, conn.coord.clock())
    _check_value(conn, args[3])
    _reply_result(conn, conn.coord.put(args[1], args[3], expiry), _ok)


@command("psetex", 4)
def cmd_psetex(conn, args):
    expiry = _expire_at("psetex", args[2], 1, False, conn.coord.clock())
    _check_value(conn, args[3])
    _reply_result(conn, conn.coord.put(args[1], args[3], expiry), _ok)


@command("setnx", 3)
def cmd_setnx(conn, args):
    value = args[2]
    _check_value(conn, value)

    def decide(current, current_expiry, now):
        if current is not None:
            return KEEP, 0
        return (value, 0), 1

    _reply_result(conn, conn.coord.update(args[1], decide), _integer)


@command("getset", 3)
def cmd_getset(conn, args):
    value = args[2]
    _check_value(conn, value)
    _reply_result(conn, conn.coord.update(args[1], lambda cur, exp, now: ((value, 0), cur)),
                  _bulk_lookup)


@command("getdel", 2)
def cmd_getdel(conn, args):
    _reply_result(conn, conn.coord.update(args[1], lambda cur, exp, now: (DELETE, cur)),
                  _bulk_lookup)


@command("getex", -2)
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
        _reply_result(conn, conn.coord.get(args[1]), _bulk_lookup)
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

    _reply_result(conn, conn.coord.update(args[1], decide), _bulk_lookup)


@command("mset", -3)
def cmd_mset(conn, args):
    if len(args) % 2 == 0:
        raise CommandError(wrong_arity_error("mset"))
    pairs = list(zip(args[1::2], args[2::2]))
    for _, value in pairs:
        _check_value(conn, value)
    _reply_result(conn, conn.coord.put_many(pairs), _ok)


@command("msetnx", -3)
def cmd_msetnx(conn, args):
    if len(args) % 2 == 0:
        raise CommandError(wrong_arity_error("msetnx"))
    pairs = list(zip(args[1::2], args[2::2]))
    for _, value in pairs:
        _check_value(conn, value)
    coord = conn.coord
    result = _then(coord.exists([k for k, _ in pairs]),
                   lambda found: 0 if found else _then(coord.put_many(pairs), lambda _: 1))
    _reply_result(conn, result, _integer)


@command("append", 3)
def cmd_append(conn, args):
    suffix = args[2]
    limit = conn.server.config.max_value_bytes

    def decide(current, current_expiry, now):
        value = suffix if current is None else current + suffix
        if len(value) > limit:
            raise CommandError("ERR string exceeds maximum allowed size (max-value-bytes)")
        return (value, current_expiry if current is not None else 0), len(value)

    _reply_result(conn, conn.coord.update(args[1], decide), _integer)


@command("strlen", 2)
def cmd_strlen(conn, args):
    def encode(out, value):
        count_lookups((value,))
        out.integer(len(value) if value else 0)

    _reply_result(conn, conn.coord.get(args[1]), encode)


def _incr(conn, key, delta):
    _reply_result(conn, conn.coord.incr(key, delta), _integer)


@command("incr", 2)
def cmd_incr(conn, args):
    _incr(conn, args[1], 1)


@command("decr", 2)
def cmd_decr(conn, args):
    _incr(conn, args[1], -1)


@command("incrby", 3)
def cmd_incrby(conn, args):
    _incr(conn, args[1], _int_arg(args[2]))


@command("decrby", 3)
def cmd_decrby(conn, args):
    delta = _int_arg(args[2])
    if delta == _LLONG_MIN:
        raise CommandError("ERR decrement would overflow")
    _incr(conn, args[1], -delta)


@command("incrbyfloat", 3)
def cmd_incrbyfloat(conn, args):
    increment = args[2]

    def decide(current, current_expiry, now):
        try:
            value = incr_float(current, increment)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return (value, current_expiry if current is not None else 0), value

    _reply_result(conn, conn.coord.update(args[1], decide), _bulk)


# -- expiry -----------------------------------------------------------------------------------

def _expire(conn, args, cmd, unit_ms, absolute):
    n = _int_arg(args[2])
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
    if unit_ms == 1000 and not -_LLONG_MAX // 1000 <= n <= _LLONG_MAX // 1000:
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    when = n * unit_ms
    if not absolute:
        when += conn.coord.clock()
    if not _LLONG_MIN <= when <= _LLONG_MAX:
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

    _reply_result(conn, conn.coord.update(args[1], decide), _integer)


@command("expire", -3)
def cmd_expire(conn, args):
    _expire(conn, args, "expire", 1000, False)


@command("pexpire", -3)
def cmd_pexpire(conn, args):
    _expire(conn, args, "pexpire", 1, False)


@command("expireat", -3)
def cmd_expireat(conn, args):
    _expire(conn, args, "expireat", 1000, True)


@command("pexpireat", -3)
def cmd_pexpireat(conn, args):
    _expire(conn, args, "pexpireat", 1, True)


@command("persist", 2)
def cmd_persist(conn, args):
    def decide(current, current_expiry, now):
        if current is None or not current_expiry:
            return KEEP, 0
        return (current, 0), 1

    _reply_result(conn, conn.coord.update(args[1], decide), _integer)


def _ttl(conn, key, relative, ms):
    now = conn.coord.clock()

    def encode(out, expiry):
        count_lookups((expiry,))
        if expiry is None:
            out.integer(-2)
        elif not expiry:
            out.integer(-1)
        elif relative:
            left = max(expiry - now, 0)
            out.integer(left if ms else (left + 500) // 1000)
        else:
            out.integer(expiry if ms else (expiry + 500) // 1000)

    _reply_result(conn, conn.coord.expiry(key), encode)


@command("ttl", 2)
def cmd_ttl(conn, args):
    _ttl(conn, args[1], True, False)


@command("pttl", 2)
def cmd_pttl(conn, args):
    _ttl(conn, args[1], True, True)


@command("expiretime", 2)
def cmd_expiretime(conn, args):
    _ttl(conn, args[1], False, False)


@command("pexpiretime", 2)
def cmd_pexpiretime(conn, args):
    _ttl(conn, args[1], False, True)
