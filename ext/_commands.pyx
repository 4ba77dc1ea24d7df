# cython: language_level=3
"""The command layer's hot loop: dispatch every command of one received chunk.

Each command is looked up in the table of fastdyn.server.commands (name -> (function, arity,
allowed before AUTH, canonical name, fast op)), checked for arity, authentication and MULTI
queueing with Redis' error texts, then run. The commands that dominate cache traffic (GET and
plain SET) run right here: one coordinator call and a reply written into the connection's
ReplyWriter at C level, with no Python frame of their own. Everything else calls its Python
function. A result that is a `Pending` keeps its reply slot through `conn.defer`.
"""
from cpython.list cimport PyList_GET_SIZE
from fastdyn._resp cimport ReplyWriter, RequestParser

import logging

from fastdyn.cluster.coordinator import Pending
from fastdyn.errors import CommandError, StorageError

log = logging.getLogger("fastdyn.server")

cdef object _Pending = Pending
cdef object _CommandError = CommandError
cdef object _StorageError = StorageError

# fast op codes (the fifth field of a command spec)
cdef enum:
    OP_NONE = 0
    OP_GET = 1
    OP_SET = 2

FAST_NONE = OP_NONE
FAST_GET = OP_GET
FAST_SET = OP_SET


# INFO's keyspace_hits / keyspace_misses: lookups of keys by reading commands, as Redis counts
cdef long long keyspace_hits = 0
cdef long long keyspace_misses = 0


def count_lookups(values):
    """Count the results of key lookups (None = a miss) into the keyspace statistics."""
    global keyspace_hits, keyspace_misses
    for v in values:
        if v is None:
            keyspace_misses += 1
        else:
            keyspace_hits += 1


def keyspace_stats(bint reset=False):
    """(hits, misses) since start or the last reset (CONFIG RESETSTAT)."""
    global keyspace_hits, keyspace_misses
    stats = (keyspace_hits, keyspace_misses)
    if reset:
        keyspace_hits = keyspace_misses = 0
    return stats


def _encode_lookup(out, value):
    count_lookups((value,))
    out.bulk(value)


def _encode_ok(out, _):
    out.ok()


cpdef int answer_error(ReplyWriter out, str name, object exc) except -1:
    """The one place a command's exception becomes its error reply; the connection goes on.
    A storage failure (a record failing its checksum, a failed write) answers for the key the
    command touched only; anything else unexpected is a bug, logged with its traceback."""
    if isinstance(exc, _CommandError):
        out.error(str(exc))
    elif isinstance(exc, ValueError):  # the store refusing an argument (empty key, oversized value)
        out.error("ERR " + str(exc))
    elif isinstance(exc, _StorageError):
        log.error("command %r failed: %s", name, exc)
        out.error("ERR " + str(exc))
    else:  # a bug must not take the node down
        log.exception("command %r failed", name, exc_info=exc)
        out.error("ERR internal error in '%s': %s" % (name, exc))
    return 0


cdef inline int run_one(object conn, ReplyWriter out, tuple spec, list args) except -1:
    """Run a command through its Python function; errors become error replies."""
    try:
        spec[0](conn, args)
    except Exception as exc:
        answer_error(out, spec[3], exc)
    return 0


cdef dict _table = {}
cdef object _find_command = None
cdef object _unknown_error = None
cdef object _arity_error = None
cdef frozenset _transaction_control = frozenset()


def configure(dict table, find_command, unknown_error, arity_error,
              frozenset transaction_control):
    """Install the command table and the error-text helpers of fastdyn.server.commands."""
    global _table, _find_command, _unknown_error, _arity_error, _transaction_control
    _table = table
    _find_command = find_command
    _unknown_error = unknown_error
    _arity_error = arity_error
    _transaction_control = transaction_control


cdef int reject(object conn, ReplyWriter out, object spec, str message) except -1:
    """A command refused before it runs. Redis ends the transaction when the refused command
    is EXEC itself (in MULTI or not) and says so."""
    if spec[3] == "exec":
        conn.multi = None
        conn.multi_failed = False
        (<RequestParser>conn.parser).queued_bytes = 0
        if message.startswith("ERR "):
            message = message[4:]
        out.error("EXECABORT Transaction discarded because of: " + message)
    else:
        out.error(message)
    return 0


# Stop a batch once this much reply data waits: a client that pipelines many large reads and
# does not read the replies must not make the node buffer them all (the rest of the batch runs
# when its socket drains).
cdef Py_ssize_t OUTPUT_HIGH_WATER = 1 << 20


def execute(conn, list cmds):
    """Run `cmds` (lists of bytes) for connection `conn`, replies into conn.out. Returns how
    many ran: fewer than len(cmds) when the replies passed the high-water mark or the
    connection is closing."""
    global keyspace_hits, keyspace_misses
    cdef ReplyWriter out = conn.out
    cdef object coord = conn.coord
    cdef object coord_get = coord.get
    cdef object coord_put = coord.put
    cdef bint authenticated = conn.authenticated  # before AUTH, cmds holds one command
    cdef bint in_multi = conn.multi is not None  # changes only by running a command
    cdef Py_ssize_t max_value = conn.server.config.max_value_bytes
    cdef Py_ssize_t n, arity
    cdef long fast
    cdef list args
    cdef object found, result
    cdef tuple spec
    cdef dict table = _table
    cdef Py_ssize_t i, total = PyList_GET_SIZE(cmds)
    for i in range(total):
        if out.len > OUTPUT_HIGH_WATER:
            return i
        args = cmds[i]
        n = PyList_GET_SIZE(args)
        found = table.get(args[0])
        if found is None:
            found = _find_command(args[0])
            if found is None:
                out.error(_unknown_error(args))
                if in_multi:
                    conn.multi_failed = True
                continue
        spec = <tuple>found
        if not authenticated and not spec[2]:
            reject(conn, out, spec, "NOAUTH Authentication required.")
            continue
        arity = spec[1]
        if (n != arity) if arity > 0 else (n < -arity):
            if spec[3] == "exec":
                reject(conn, out, spec, _arity_error(spec[3]))
                in_multi = False
                continue
            out.error(_arity_error(spec[3]))
            if in_multi:
                conn.multi_failed = True
            continue
        if in_multi and spec[3] not in _transaction_control:
            conn.multi.append((spec, args))
            # the queue waits for EXEC: it counts toward the query buffer limit, as in Redis
            (<RequestParser>conn.parser).charge(args)
            out.simple("QUEUED")
            continue
        fast = spec[4]
        if fast == OP_GET:
            try:
                result = coord_get(args[1])
            except Exception as exc:
                answer_error(out, spec[3], exc)
                continue
            if type(result) is _Pending:
                conn.defer(result, _encode_lookup)
            else:
                if result is None:
                    keyspace_misses += 1
                else:
                    keyspace_hits += 1
                out.bulk(result)
        elif fast == OP_SET and n == 3 and len(<bytes>args[2]) <= max_value:
            try:
                result = coord_put(args[1], args[2], 0)
            except Exception as exc:
                answer_error(out, spec[3], exc)
                continue
            if type(result) is _Pending:
                conn.defer(result, _encode_ok)
            else:
                out.ok()
        else:
            run_one(conn, out, spec, args)
            if conn.closing:
                return i + 1
            if in_multi and conn.multi is None:
                (<RequestParser>conn.parser).queued_bytes = 0
            in_multi = conn.multi is not None
    return total
