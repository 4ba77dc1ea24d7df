"""Connection and server administration: PING ... CONFIG, TIME, MEMORY (Redis' server.c,
networking.c, config.c, object.c)."""
import time

from fastdyn import __version__
from fastdyn._glob import GlobPattern
from fastdyn._logstore import HEADER_BYTES
from fastdyn._resp import parse_int
from fastdyn.errors import CommandError
from fastdyn.server.commands.registry import (ERR_SYNTAX, CommandGroup, int_arg, integer, ok,
                                              reply_result, unknown_subcommand,
                                              wrong_arity_error)

connection = CommandGroup("connection")
server = CommandGroup("server")


# A key's cost in fastdyn: its keydir entry (a 22-byte header plus the key) and 8-byte slot,
# and its record in the log (header, key, value).
KEYDIR_ENTRY_BYTES = 22 + 8


@connection.command("ping", -1, "fast", summary="Returns the server's liveliness response.")
def cmd_ping(conn, args):
    if len(args) > 2:
        raise CommandError(wrong_arity_error("ping"))
    if len(args) == 2:
        conn.out.bulk(args[1])
    else:
        conn.out.simple("PONG")


@connection.command("echo", 2, "fast", summary="Returns the given string.")
def cmd_echo(conn, args):
    conn.out.bulk(args[1])


@connection.command("quit", -1, "fast no-auth", summary="Closes the connection.",
                    multi_control=True)
def cmd_quit(conn, args):
    conn.out.ok()
    conn.close_after_reply()


@connection.command("reset", 1, "fast no-auth", summary="Resets the connection.",
                    multi_control=True)
def cmd_reset(conn, args):
    # Redis' clearClientConnectionState: leave MULTI, RESP2, no name, logged out
    conn.multi, conn.multi_failed = None, False
    conn.out.proto = 2
    conn.name = b""
    conn.authenticated = not conn.server.config.requirepass
    conn.parser.auth_required = not conn.authenticated
    conn.out.simple("RESET")


@connection.command("select", 2, "fast", summary="Changes the selected database.")
def cmd_select(conn, args):
    if int_arg(args[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    conn.out.ok()


@connection.command("auth", -2, "fast no-auth", summary="Authenticates the connection.")
def cmd_auth(conn, args):
    if len(args) > 3:
        raise CommandError(ERR_SYNTAX)
    if len(args) == 2 and not conn.server.config.requirepass:
        raise CommandError("ERR AUTH <password> called without any password configured for "
                           "the default user. Are you sure your configuration is correct?")
    user = args[1] if len(args) == 3 else b"default"
    conn.authenticate(user, args[-1])
    conn.out.ok()


@connection.command("hello", -1, "fast no-auth", summary="Handshakes with the Redis server.")
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


# Redis' client types; every fastdyn client is a normal one
_CLIENT_TYPES = (b"normal", b"slave", b"replica", b"pubsub", b"master")


def _client_list(conn, args):
    clients = conn.server.clients
    if len(args) == 4 and args[2].lower() == b"type":
        kind = args[3].lower()
        if kind not in _CLIENT_TYPES:
            raise CommandError("ERR Unknown client type '%s'"
                               % args[3].decode("utf-8", "replace"))
        chosen = sorted(clients, key=lambda c: c.id) if kind == b"normal" else []
    elif len(args) > 3 and args[2].lower() == b"id":
        by_id = {c.id: c for c in clients}
        ids = [int_arg(a, "ERR Invalid client ID") for a in args[3:]]
        chosen = [by_id[i] for i in ids if i in by_id]
    elif len(args) == 2:
        chosen = sorted(clients, key=lambda c: c.id)
    else:
        raise CommandError(ERR_SYNTAX)
    conn.out.verbatim("".join(c.describe() + "\n" for c in chosen))


@connection.command("client", -2, summary="A container for client connection commands.")
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
        out.verbatim(conn.describe() + "\n")
    elif sub == b"list":
        _client_list(conn, args)
    elif sub in (b"id", b"setname", b"getname", b"setinfo", b"info"):
        raise CommandError(wrong_arity_error("client|" + sub.decode()))
    else:
        raise unknown_subcommand("CLIENT", args[1])


@server.command("info", -1, "loading stale",
                summary="Returns information and statistics about the server.")
def cmd_info(conn, args):
    from fastdyn.server.info import info_text
    conn.out.verbatim(info_text(conn.server, [a.decode("utf-8", "replace").lower()
                                              for a in args[1:]]))


@server.command("time", 1, "loading stale fast", summary="Returns the server time.")
def cmd_time(conn, args):
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    conn.out.bulks([b"%d" % seconds, b"%d" % micros])


@server.command("lastsave", 1, "loading stale fast",
                summary="Returns the Unix timestamp of the last successful save to disk.")
def cmd_lastsave(conn, args):
    # the log is the persistence: the data was last whole on disk when the node opened it
    conn.out.integer(int(conn.server.started))


@server.command("command", -1, "loading stale",
                summary="Returns detailed information about all commands.")
def cmd_command(conn, args):
    registry = conn.server.commands
    out = conn.out
    names = registry.names()
    sub = args[1].lower() if len(args) > 1 else None
    if sub is None:
        out.array(len(names))
        for name in names:
            _command_info(out, registry.specs[name])
    elif sub == b"count" and len(args) == 2:
        out.integer(len(names))
    elif sub == b"list" and len(args) == 2:
        out.bulks([n.encode() for n in names])
    elif sub == b"info":
        out.array(len(args) - 2)
        for name in args[2:]:
            spec = registry.find(name)
            if spec is None:
                out.null_array()
            else:
                _command_info(out, spec)
    elif sub == b"docs":
        wanted = [registry.find(a) for a in args[2:]] if len(args) > 2 else \
            [registry.specs[n] for n in names]
        wanted = [spec for spec in wanted if spec is not None]
        out.map(len(wanted))
        for spec in wanted:
            out.bulk(spec.name)
            out.map(2)
            out.bulk(b"summary")
            out.bulk(spec.summary)
            out.bulk(b"group")
            out.bulk(spec.group)
    else:
        raise unknown_subcommand("COMMAND", args[1])


def _command_info(out, spec):
    out.array(6)
    out.bulk(spec.name)
    out.integer(spec.arity)
    out.set(len(spec.flags))
    for flag in spec.flags:
        out.simple(flag)
    out.integer(spec.first_key)
    out.integer(spec.last_key)
    out.integer(spec.key_step)


@server.command("config", -2, summary="A container for server configuration commands.")
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
        raise unknown_subcommand("CONFIG", args[1])


@server.command("memory", -2, summary="A container for memory diagnostics commands.")
def cmd_memory(conn, args):
    sub = args[1].lower()
    if sub != b"usage":
        raise unknown_subcommand("MEMORY", args[1])
    if len(args) < 3:
        raise CommandError(wrong_arity_error("memory|usage"))
    i = 3
    while i < len(args):
        # SAMPLES counts nested elements in Redis; a string has none, so it is only checked
        if args[i].lower() == b"samples" and i + 1 < len(args):
            if int_arg(args[i + 1]) < 0:
                raise CommandError(ERR_SYNTAX)
            i += 2
        else:
            raise CommandError(ERR_SYNTAX)
    key = args[2]

    def encode(out, entry):
        if entry is None:
            out.null()
        else:
            out.integer(KEYDIR_ENTRY_BYTES + HEADER_BYTES + 2 * len(key) + len(entry[0]))

    reply_result(conn, conn.coord.get_entry(key), encode)


@server.command("dbsize", 1, "readonly fast", summary="Returns the number of keys in the database.")
def cmd_dbsize(conn, args):
    reply_result(conn, conn.coord.size(), integer)


def _flush(conn, args):
    if len(args) > 2 or (len(args) == 2 and args[1].lower() not in (b"async", b"sync")):
        raise CommandError(ERR_SYNTAX)
    reply_result(conn, conn.coord.flush(), ok)


server.add("flushdb", _flush, -1, "write", summary="Removes all keys from the current database.")
server.add("flushall", _flush, -1, "write", summary="Removes all keys from all databases.")
