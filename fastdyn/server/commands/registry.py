"""The command registry and what every command module shares.

A command is a function `(conn, args)` that writes its reply into `conn.out` (a ReplyWriter).
Data goes through `conn.coord` (the coordinator) only; a result that arrives later (a
`Pending`) is handed to `conn.defer(pending, encode)` which keeps the reply's place in line.
Read-modify-write commands are one `coord.update(key, fn)` with a pure `fn`, counters one
`coord.incr`. A command refuses bad input by raising CommandError with Redis' text; the
dispatcher (fastdyn._commands.error_reply) makes every error reply.

Each module declares its commands in a `CommandGroup`; the package joins the groups into one
`Registry` of CommandSpec records.
"""
from fastdyn._commands import FAST_NONE, CommandSpec
from fastdyn._resp import parse_int
from fastdyn.pending import Pending, then  # noqa: F401  (re-exported for the command modules)
from fastdyn.errors import CommandError

LLONG_MAX = (1 << 63) - 1
LLONG_MIN = -(1 << 63)

ERR_SYNTAX = "ERR syntax error"
ERR_NOT_INT = "ERR value is not an integer or out of range"


class CommandGroup:
    """The commands of one module, in Redis' documentation group (string, generic, ...)."""

    __slots__ = ("group", "specs")

    def __init__(self, group: str):
        self.group = group
        self.specs = []

    def command(self, name, arity, flags="", keys=(0, 0, 0), summary="", fast=FAST_NONE,
                multi_control=False):
        """Register the decorated function as command `name`; `flags` are Redis' flag names
        separated by spaces, `keys` the (first, last, step) key positions (0s: no keys)."""
        def register(fn):
            self.add(name, fn, arity, flags, keys, summary, fast, multi_control)
            return fn
        return register

    def add(self, name, fn, arity, flags="", keys=(0, 0, 0), summary="", fast=FAST_NONE,
            multi_control=False):
        self.specs.append(CommandSpec(name, fn, arity, tuple(flags.split()), keys, self.group,
                                      summary, fast, multi_control))


class Registry:
    """Every command by name. `table` holds the lower- and upper-case spelling of each name
    (the dispatcher's fast lookup); `find` takes any letter case."""

    __slots__ = ("table", "specs")

    def __init__(self, groups):
        self.table = {}
        self.specs = {}
        for group in groups:
            for spec in group.specs:
                if spec.name in self.specs:
                    raise ValueError(f"command {spec.name!r} is registered twice")
                self.specs[spec.name] = spec
                self.table[spec.name.encode()] = spec
                self.table[spec.name.upper().encode()] = spec

    def find(self, name: bytes):
        """The spec for a command name in any letter case, or None."""
        return self.table.get(name.lower())

    def names(self):
        return sorted(self.specs)

    @staticmethod
    def unknown_command_error(args) -> str:
        """Redis 7's text: the name, then quoted arguments until 128 characters are used."""
        tail = ""
        for a in args[1:]:
            if len(tail) >= 128:
                break
            tail += "'%s' " % a.decode("utf-8", "replace")[:128 - len(tail)]
        return "ERR unknown command '%s', with args beginning with: %s" % (
            args[0].decode("utf-8", "replace")[:128], tail)

    @staticmethod
    def wrong_arity_error(name: str) -> str:
        return f"ERR wrong number of arguments for '{name}' command"


wrong_arity_error = Registry.wrong_arity_error


def unknown_subcommand(command: str, sub: bytes) -> CommandError:
    return CommandError("ERR unknown subcommand '%s'. Try %s HELP."
                        % (sub.decode("utf-8", "replace"), command))


def int_arg(b: bytes, message: str = ERR_NOT_INT) -> int:
    """A 64-bit integer argument under Redis' rules (strict decimal), or CommandError."""
    n = parse_int(b)
    if n is None:
        raise CommandError(message)
    return n


def reply_result(conn, result, encode) -> None:
    """Encode a direct result now, or keep the reply's slot until a Pending completes."""
    if result.__class__ is Pending:
        conn.defer(result, encode)
    else:
        encode(conn.out, result)


def bulk(out, value):
    out.bulk(value)


def integer(out, n):
    out.integer(n)


def ok(out, _):
    out.ok()
