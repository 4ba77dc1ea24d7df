# cython: language_level=3
"""The command layer's hot loop: dispatch every command of one received chunk.

Each command is looked up in the registry of fastdyn.server.commands (name -> CommandSpec),
checked for arity, authentication and MULTI queueing with Redis' error texts, then run. The
commands that dominate cache traffic (GET and plain SET) run right here: one coordinator call
and a reply written into the connection's ReplyWriter at C level, with no Python frame of
their own. Everything else calls its Python function. A result that is a `Pending` keeps its
reply slot in the connection's `ReplyQueue` (through `conn.defer` from a Python command).
Whatever a command raises, or a Pending completes with, becomes its error reply in one place,
`error_reply`.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from libc.stdint cimport uint64_t
from fastdyn._logstore cimport MAX_KEY, PREFETCH_MAX, Store
from fastdyn._pending cimport Completion, Pending as _CPending
from fastdyn._resp cimport ReplyWriter, RequestParser

import logging

from fastdyn.errors import CommandError, PersistFailed, StorageError, misconf
from fastdyn.pending import Pending

log = logging.getLogger("fastdyn.server")

cdef object _Pending = Pending
cdef object _CommandError = CommandError
cdef object _StorageError = StorageError
cdef object _PersistFailed = PersistFailed

# fast op codes (CommandSpec.fast_op)
cdef enum:
    OP_NONE = 0
    OP_GET = 1
    OP_SET = 2

FAST_NONE = OP_NONE
FAST_GET = OP_GET
FAST_SET = OP_SET


@cython.final
cdef class KeyspaceStats:
    """INFO's keyspace_hits / keyspace_misses of one node: lookups of keys by reading commands,
    as Redis counts them. The node makes one and its connections share it (conn.keyspace);
    `execute` counts GET at C level, the other commands through count() or the encoders."""
    cdef public long long hits, misses

    cdef inline void tally(self, object value) noexcept:
        if value is None:
            self.misses += 1
        else:
            self.hits += 1

    def count(self, values):
        """Count the results of key lookups (None = a miss)."""
        for v in values:
            self.tally(v)

    def bulk_lookup(self, out, value):
        """Encoder of a reading command's one value: counts it, then answers it."""
        self.tally(value)
        out.bulk(value)

    def bulks_lookup(self, out, values):
        """Encoder of a reading command's values (MGET): counts them, then answers them."""
        self.count(values)
        out.bulks(values)

    def reset(self):
        """CONFIG RESETSTAT."""
        self.hits = self.misses = 0


cdef class CommandSpec:
    """One command: its function and everything the dispatcher, COMMAND INFO and COMMAND DOCS
    say about it. arity follows Redis: n > 0 exactly n arguments with the name, n < 0 at least
    -n. Flags are Redis' names; "no-auth" lets the command run before AUTH. multi_control: the
    command runs at once inside MULTI instead of being queued (EXEC, DISCARD, ...). fast_op
    marks the commands `execute` runs inline (its function serves the forms the fast path does
    not take, and EXEC)."""
    cdef readonly str name
    cdef readonly object function
    cdef readonly Py_ssize_t arity
    cdef readonly tuple flags
    cdef readonly Py_ssize_t first_key, last_key, key_step
    cdef readonly str group, summary
    cdef readonly long fast_op
    cdef readonly bint no_auth, multi_control

    def __init__(self, str name, function, Py_ssize_t arity, tuple flags, tuple keys,
                 str group, str summary, long fast_op=OP_NONE, bint multi_control=False):
        if not summary:
            raise ValueError(f"command {name!r} needs a summary")
        self.name = name
        self.function = function
        self.arity = arity
        self.flags = flags
        self.first_key, self.last_key, self.key_step = keys
        self.group = group
        self.summary = summary
        self.fast_op = fast_op
        self.no_auth = "no-auth" in flags
        self.multi_control = multi_control

    def __repr__(self):
        return f"CommandSpec({self.name!r}, arity={self.arity})"


def error_reply(exc, name=None) -> str:
    """The error reply (without its '-') for an exception a command raised or a Pending
    completed with: a CommandError carries its text; a ValueError is the store refusing an
    argument (an empty or oversized key or value); anything else is a bug or an I/O failure,
    logged, and must not take the node down."""
    if isinstance(exc, _CommandError):
        return str(exc)
    if isinstance(exc, ValueError):
        return "ERR " + str(exc)
    if isinstance(exc, _StorageError):
        # a record failing its checksum, a failed write: the error answers for this command's
        # key only and the connection goes on
        log.error("command %r failed: %s", name, exc)
        return "ERR " + str(exc)
    log.error("command %r failed", name, exc_info=exc)
    return "ERR internal error in '%s': %s" % (name, exc)


# How a deferred reply is encoded once its result is there.
cdef enum:
    ENCODE_CALL = 0       # the command's encode(out, result)
    ENCODE_OK = 1         # +OK (SET)
    ENCODE_LOOKUP = 2     # a key's value, counted as a keyspace hit or miss (GET)


@cython.final
@cython.freelist(64)
cdef class _Slot(Completion):
    """One deferred reply's place in its connection's ReplyQueue: the completion of its
    Pending. `data` holds the reply when it completed while an earlier one still waited."""
    cdef ReplyQueue queue
    cdef object encode
    cdef bytes data
    cdef int kind, proto

    cdef int completed(self, object result) except -1:
        return self.queue.fill(self, result)


@cython.final
cdef class ReplyQueue:
    """A connection's replies from the first deferred one on, in request order.

    A command whose result is a Pending holds a slot (`_Slot`, the Pending's completion, no
    closure); replies of the commands after it wait behind it as bytes. A result is encoded
    as soon as it is there: straight after the replies before it when it is the first slot
    waiting (the common case), else into the slot. `take()` hands the completed prefix once
    per event-loop turn: the first completion of a turn schedules `conn.drain_slots`."""
    cdef ReplyWriter ready       # the completed prefix, not taken yet
    cdef ReplyWriter scratch     # encodes a reply that completes before an earlier one
    cdef list waiting            # from the first incomplete slot on: _Slot or bytes entries
    cdef Py_ssize_t head         # index of that first incomplete slot in `waiting`
    cdef object keyspace         # the node's KeyspaceStats (GET's hits and misses)
    cdef object conn
    cdef bint scheduled

    def __init__(self, conn, keyspace=None):
        self.ready = ReplyWriter()
        self.scratch = ReplyWriter()
        self.waiting = []
        self.head = 0
        self.conn = conn
        self.keyspace = keyspace
        self.scheduled = False

    @property
    def pending(self) -> bool:
        """A reply still waits for its result."""
        return self.head < len(self.waiting)

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing completed is left to take: replies may leave directly."""
        return self.head >= len(self.waiting) and self.ready.len == 0

    def defer(self, ReplyWriter out, pending, encode):
        """Hold the next reply's place until `pending` completes; encode(writer, result)
        answers it (a failure is answered through error_reply). The replies in `out` so far
        go before it."""
        self.add(out, pending, ENCODE_CALL, encode)

    def push(self, ReplyWriter out):
        """Queue the replies in `out` behind every slot already held."""
        self.queue_written(out)

    def take(self):
        """The completed prefix's bytes (b"" if none); the next completion schedules a drain
        again."""
        self.scheduled = False
        if self.ready.len == 0:
            return b""
        return self.ready.take()

    cdef int queue_written(self, ReplyWriter out) except -1:
        if out.len == 0:
            return 0
        if self.head >= len(self.waiting):
            self.ready.put(out.buf, out.len)
            out.len = 0
        else:
            self.waiting.append(out.take())
        return 0

    cdef int add(self, ReplyWriter out, object pending, int kind, object encode) except -1:
        cdef _Slot slot = _Slot.__new__(_Slot)
        self.queue_written(out)
        slot.queue = self
        slot.kind = kind
        slot.encode = encode
        slot.proto = out.proto
        self.waiting.append(slot)
        (<_CPending?>pending).add_done_callback(slot)
        return 0

    cdef int fill(self, _Slot slot, object result) except -1:
        cdef list waiting = self.waiting
        if slot.queue is not self:
            return 0                     # completed already
        slot.queue = None
        if waiting[self.head] is slot:
            self.encode(self.ready, slot, result)
            self.head += 1
            self.advance()
        else:
            self.encode(self.scratch, slot, result)
            slot.data = self.scratch.take()
        if not self.scheduled:
            # the replies a turn completes leave together: one write per connection
            self.scheduled = True
            conn = self.conn
            conn.server.loop.call_soon(conn.drain_slots)
        return 0

    cdef int advance(self) except -1:
        """Move the entries after a completed head into the prefix, up to the next slot
        still waiting."""
        cdef list waiting = self.waiting
        cdef Py_ssize_t n = len(waiting)
        cdef bytes data
        while self.head < n:
            entry = waiting[self.head]
            if type(entry) is bytes:
                data = <bytes>entry
            else:
                data = (<_Slot>entry).data
                if data is None:
                    break
            self.ready.put(data, len(data))
            self.head += 1
        if self.head >= n:
            del waiting[:]
            self.head = 0
        elif self.head >= 64 and self.head * 2 >= n:
            del waiting[:self.head]
            self.head = 0
        return 0

    cdef int encode(self, ReplyWriter w, _Slot slot, object result) except -1:
        cdef Py_ssize_t start = w.len
        w.proto = slot.proto
        if isinstance(result, Exception):
            w.error(error_reply(result))
        elif slot.kind == ENCODE_OK:
            w.ok()
        elif slot.kind == ENCODE_LOOKUP:
            (<KeyspaceStats>self.keyspace).tally(result)
            w.bulk(result)
        else:
            try:
                slot.encode(w, result)
            except Exception as exc:
                w.len = start            # no half-written reply
                w.error(error_reply(exc))
        return 0


cdef int run_one(object conn, ReplyWriter out, CommandSpec spec, list args) except -1:
    """Run a command through its Python function; errors become error replies."""
    try:
        spec.function(conn, args)
    except Exception as exc:
        out.error(error_reply(exc, spec.name))
    return 0


def run_command(conn, CommandSpec spec, list args):
    """One command outside `execute` (a queued command at EXEC), replies into conn.out."""
    run_one(conn, conn.out, spec, args)


cdef dict _table = {}
cdef object _find_command = None
cdef object _unknown_error = None
cdef object _arity_error = None


def configure(registry):
    """Install the registry fastdyn.server.commands builds: its name table (every spelling the
    fast lookup takes), its case-insensitive lookup and its error texts."""
    global _table, _find_command, _unknown_error, _arity_error
    _table = registry.table
    _find_command = registry.find
    _unknown_error = registry.unknown_command_error
    _arity_error = registry.wrong_arity_error


cdef int reject(object conn, ReplyWriter out, CommandSpec spec, str message) except -1:
    """A command refused before it runs. Redis ends the transaction when the refused command
    is EXEC itself (in MULTI or not) and says so."""
    if spec.name == "exec":
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


cdef void _prefetch_keys(Store store, list cmds, Py_ssize_t start, Py_ssize_t total):
    """Let the store fetch ahead the keydir entries and records of the first key of the next
    PREFETCH_MAX commands: a pipeline of random keys then overlaps its cache misses."""
    cdef const char *keys[PREFETCH_MAX]
    cdef size_t lens[PREFETCH_MAX]
    cdef Py_ssize_t m = 0, i, stop = min(total, start + PREFETCH_MAX)
    cdef list args
    cdef object key
    for i in range(start, stop):
        args = <list>cmds[i]
        if PyList_GET_SIZE(args) >= 2:
            key = args[1]
            if type(key) is bytes and PyBytes_GET_SIZE(key) > 0:
                keys[m] = PyBytes_AS_STRING(key)
                lens[m] = <size_t>PyBytes_GET_SIZE(key)
                m += 1
    store._prefetch_lookups(keys, lens, m)


def execute(conn, list cmds):
    """Run `cmds` (lists of bytes) for connection `conn`, replies into conn.out. Returns how
    many ran: fewer than len(cmds) when the replies passed the high-water mark or the
    connection is closing."""
    cdef ReplyWriter out = conn.out
    cdef KeyspaceStats keyspace = None     # looked up at the batch's first GET
    cdef ReplyQueue replies = None         # looked up at the batch's first deferred reply
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
    cdef CommandSpec spec
    cdef dict table = _table
    cdef Py_ssize_t i, total = PyList_GET_SIZE(cmds)
    cdef Store store = None     # a pipeline's keys are fetched ahead, a chunk at a time
    if total > 1:
        found = getattr(conn.server, "store", None)
        if isinstance(found, Store):
            store = <Store>found
    for i in range(total):
        if out.len > OUTPUT_HIGH_WATER:
            return i
        if store is not None and i % PREFETCH_MAX == 0:
            _prefetch_keys(store, cmds, i, total)
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
        spec = <CommandSpec>found
        if not authenticated and not spec.no_auth:
            reject(conn, out, spec, "NOAUTH Authentication required.")
            continue
        arity = spec.arity
        if (n != arity) if arity > 0 else (n < -arity):
            if spec.name == "exec":
                reject(conn, out, spec, _arity_error(spec.name))
                in_multi = False
                continue
            out.error(_arity_error(spec.name))
            if in_multi:
                conn.multi_failed = True
            continue
        if in_multi and not spec.multi_control:
            conn.multi.append((spec, args))
            # the queue waits for EXEC: it counts toward the query buffer limit, as in Redis
            (<RequestParser>conn.parser).charge(args)
            out.simple("QUEUED")
            continue
        fast = spec.fast_op
        if fast == OP_GET:
            try:
                result = coord_get(args[1])
            except Exception as exc:
                out.error(error_reply(exc, spec.name))
                continue
            if type(result) is _Pending:
                if replies is None:
                    replies = conn.replies
                replies.add(out, result, ENCODE_LOOKUP, None)
            else:
                if keyspace is None:
                    keyspace = conn.keyspace
                keyspace.tally(result)
                out.bulk(result)
        elif fast == OP_SET and n == 3 and len(<bytes>args[2]) <= max_value:
            try:
                result = coord_put(args[1], args[2], 0)
            except Exception as exc:
                out.error(error_reply(exc, spec.name))
                continue
            if type(result) is _Pending:
                if replies is None:
                    replies = conn.replies
                replies.add(out, result, ENCODE_OK, None)
            else:
                out.ok()
        else:
            run_one(conn, out, spec, args)
            if conn.closing:
                return i + 1
            if in_multi and conn.multi is None:
                (<RequestParser>conn.parser).queued_bytes = 0
            in_multi = conn.multi is not None
            authenticated = conn.authenticated  # RESET logs out
    return total


# -- a single node's GET and SET, straight from the receive buffer ------------------------------
# A single node's coordinator answers a GET, or a SET without a condition (plain, with EX or
# PX, SETEX, PSETEX), with one store call (its `direct_store`), so those run here from the
# parser's buffer: the key and value are pointers into it, a GET's reply is copied from the
# record, and no Python object is made per command.
# Anything else - another command, a frame not complete yet or not in the canonical form
# redis clients send, a key or value the store would refuse - goes through the parser and
# `execute`, which give the same results and errors as ever.

cdef struct Direct:
    int op              # OP_GET or OP_SET
    const char *key
    size_t klen
    const char *value
    size_t vlen
    long long ttl_ms    # SET's relative expiry (EX, PX, SETEX, PSETEX); 0 = none
    Py_ssize_t size     # the whole frame


cdef inline Py_ssize_t read_bulk(const char *p, Py_ssize_t avail, size_t least, size_t most,
                                 const char **data, size_t *n) noexcept:
    """The size of the whole bulk string ($, its length in digits, CRLF, the data, CRLF) at
    p if it is complete within avail and least <= length <= most; else 0."""
    cdef Py_ssize_t i = 1
    cdef size_t length = 0
    if avail < 4 or p[0] != b'$':
        return 0
    while i < avail and i <= 10 and b'0' <= p[i] <= b'9':
        length = length * 10 + <size_t>(p[i] - <char>b'0')
        i += 1
    if i == 1 or (p[1] == b'0' and i > 2) or i + 2 > avail or p[i] != b'\r' \
            or p[i + 1] != b'\n':
        return 0        # (a leading zero is a protocol error: the parser reports it)
    if length < least or length > most or avail - i - 4 < <Py_ssize_t>length:
        return 0
    i += 2
    if p[i + length] != b'\r' or p[i + length + 1] != b'\n':
        return 0
    data[0] = p + i
    n[0] = length
    return i + <Py_ssize_t>length + 2


cdef inline bint is_word(const char *s, size_t n, const char *lower) noexcept:
    """s[:n] is the lower-case ASCII word `lower` in any letter case."""
    cdef size_t i
    for i in range(n):
        if lower[i] == 0 or (s[i] | 0x20) != lower[i]:
            return False
    return lower[n] == 0


cdef inline long long positive(const char *s, size_t n) noexcept:
    """s[:n] as a decimal of 1 to 12 digits without a leading zero, else 0 (Redis' wider
    range and its errors are the command's own, in Python)."""
    cdef long long v = 0
    cdef size_t i
    if n == 0 or n > 12 or s[0] == b'0':
        return 0
    for i in range(n):
        if not b'0' <= s[i] <= b'9':
            return 0
        v = v * 10 + (s[i] - <char>b'0')
    return v


cdef Py_ssize_t match_direct(const char *p, Py_ssize_t avail, size_t max_key,
                             size_t max_value, Direct *c) noexcept:
    """The size of a complete frame at p of `GET key`, `SET key value`, `SET key value EX|PX
    n`, `SETEX key n value` or `PSETEX key n value` (names in any letter case, a key of
    1..max_key bytes, a value of at most max_value bytes, n a plain positive decimal),
    described in c; else 0."""
    cdef Py_ssize_t n, pos = 4
    cdef long nargs
    cdef const char *name
    cdef const char *word
    cdef size_t name_len, word_len
    cdef long long unit = 0
    if avail < 4 or p[0] != b'*' or not b'2' <= p[1] <= b'5' or p[2] != b'\r' or p[3] != b'\n':
        return 0
    nargs = p[1] - <char>b'0'
    n = read_bulk(p + pos, avail - pos, 3, 6, &name, &name_len)
    if n == 0:
        return 0
    pos += n
    if nargs == 2 and is_word(name, name_len, "get"):
        c.op = OP_GET
    elif (nargs == 3 or nargs == 5) and is_word(name, name_len, "set"):
        c.op = OP_SET
    elif nargs == 4 and is_word(name, name_len, "setex"):
        c.op = OP_SET
        unit = 1000
    elif nargs == 4 and is_word(name, name_len, "psetex"):
        c.op = OP_SET
        unit = 1
    else:
        return 0
    n = read_bulk(p + pos, avail - pos, 1, max_key, &c.key, &c.klen)
    if n == 0:
        return 0
    pos += n
    c.ttl_ms = 0
    if unit:                                  # SETEX / PSETEX key n value
        n = read_bulk(p + pos, avail - pos, 1, 12, &word, &word_len)
        if n == 0:
            return 0
        pos += n
        c.ttl_ms = positive(word, word_len) * unit
        if c.ttl_ms == 0:
            return 0
    if c.op == OP_SET:
        n = read_bulk(p + pos, avail - pos, 0, max_value, &c.value, &c.vlen)
        if n == 0:
            return 0
        pos += n
    if nargs == 5:                            # SET key value EX|PX n
        n = read_bulk(p + pos, avail - pos, 2, 2, &word, &word_len)
        if n == 0:
            return 0
        pos += n
        unit = 1000 if is_word(word, 2, "ex") else 1 if is_word(word, 2, "px") else 0
        n = read_bulk(p + pos, avail - pos, 1, 12, &word, &word_len)
        if n == 0 or unit == 0:
            return 0
        pos += n
        c.ttl_ms = positive(word, word_len) * unit
        if c.ttl_ms == 0:
            return 0
    c.size = pos
    return pos


cdef int run_direct(object conn, Store store, RequestParser parser, ReplyWriter out,
                    Py_ssize_t *ran, Py_ssize_t *writes) except -1:
    """Run the GET and SET frames (match_direct) at the head of the parser's buffer against
    `store`, up to the first other frame or the output high-water mark; ran and writes count
    them."""
    cdef Direct cmds[PREFETCH_MAX]
    cdef const char *keys[PREFETCH_MAX]
    cdef size_t lens[PREFETCH_MAX]
    cdef Py_ssize_t m, i, vl, size
    cdef size_t max_value = <size_t>min(conn.server.config.max_value_bytes, parser.max_bulk)
    cdef size_t max_key = <size_t>min(MAX_KEY, parser.max_bulk)
    cdef const char *vp
    cdef KeyspaceStats keyspace = None
    cdef Direct *c
    cdef long long now = 0
    while True:
        # a chunk of frames first, so that their lookups overlap their cache misses
        m = 0
        size = parser.start
        while m < PREFETCH_MAX and size < parser.end:
            if match_direct(parser.buf + size, parser.end - size, max_key, max_value,
                            &cmds[m]) == 0:
                break
            keys[m] = cmds[m].key
            lens[m] = cmds[m].klen
            size += cmds[m].size
            m += 1
        if m == 0:
            return 0
        if m > 1:
            store._prefetch_lookups(keys, lens, m)
        for i in range(m):
            if out.len > OUTPUT_HIGH_WATER:
                return 0
            c = &cmds[i]
            parser.start += c.size
            ran[0] += 1
            if c.op == OP_GET:
                try:
                    vl = store._value_ref(c.key, c.klen, &vp)
                    if keyspace is None:
                        keyspace = conn.keyspace
                    if vl == -2:       # stored compressed or large
                        result = store.get(PyBytes_FromStringAndSize(c.key, c.klen))
                        keyspace.tally(result)
                        out.bulk(result)
                    elif vl < 0:
                        keyspace.misses += 1
                        out.null()
                    else:
                        keyspace.hits += 1
                        out.bulk_raw(vp, vl)
                except Exception as exc:
                    out.error(error_reply(exc, "get"))
            elif store._plain_put_ok(c.vlen):
                try:
                    if c.ttl_ms and now == 0:
                        now = conn.coord.clock()     # the base of relative expiries
                    store._put_plain(c.key, c.klen, c.value, c.vlen,
                                     <uint64_t>(now + c.ttl_ms) if c.ttl_ms else 0)
                    writes[0] += 1
                    out.ok()
                except Exception as exc:
                    if isinstance(exc, _PersistFailed):
                        exc = misconf(exc)
                    out.error(error_reply(exc, "set"))
            else:
                # a value to compress, a store refusing writes: the coordinator's way
                parser.start -= c.size
                ran[0] -= 1
                return 0


def run_received(conn, data):
    """Run every complete command of `data` (after what the parser holds) for an
    authenticated connection with no backlog; replies into conn.out. A single node's GET
    and SET (outside MULTI) run straight from the buffer; the rest is parsed and goes
    through `execute`. Commands left over when the replies pass the high-water mark become
    conn.backlog. Returns how many commands ran or wait in the backlog."""
    cdef RequestParser parser = conn.parser
    cdef ReplyWriter out = conn.out
    cdef object direct = conn.direct_store
    cdef Py_ssize_t ran = 0, writes = 0, done
    cdef list cmds
    if direct is None:
        cmds = parser.parse(data)
    else:
        parser.append(data)
        if parser.error is None and parser.mb_left == 0 and conn.multi is None:
            try:
                run_direct(conn, <Store>direct, parser, out, &ran, &writes)
            finally:
                if writes:
                    conn.coord.write_seq += writes
            if parser.start == parser.end and parser.cap <= (1 << 20):
                parser.start = parser.end = 0   # all of it ran (parse would free a big buffer)
                return ran
        cmds = parser.parse(b"")
    if cmds:
        done = execute(conn, cmds)    # (returns 0 at once past the output high-water mark)
        if done < PyList_GET_SIZE(cmds) and not conn.closing:
            conn.backlog = cmds[done:]
    return ran + PyList_GET_SIZE(cmds)
