# cython: language_level=3
"""The quorum coordinator's per-key hot objects (fastdyn/cluster/quorum.py, put_core.py,
get_core.py): the decision cores of a write and a read, the replicated write and read they
drive, and the batch that hands each key of a peer's answer its own result.

Every replicated operation makes one of each and every replica's answer passes through them;
as Python classes they were a third of a coordinator's CPU per operation. Here an answer is
read from the peer's bytes and handed on without building a tuple per key.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy
from fastdyn._replica cimport ReplicaCore
from xxh64 cimport fd_xxh64, FD_KEY_SEED

import logging

from fastdyn.cluster.apl import Target
from fastdyn.cluster import object as vo
from fastdyn.cluster.coordinator import MAX_KEY_BYTES
from fastdyn.cluster.hlc import MAX_TIMESTAMP
from fastdyn.cluster.object import newest_stamp
from fastdyn.errors import (BadObject, CommandError, HintStoreFull, ProtocolError,
                            StorageError)
from fastdyn.peer.messages import REPLICA_GET, REPLICA_PUT
from fastdyn.pending import Pending

log = logging.getLogger("fastdyn.cluster")

PENDING, OK, FAILED = 0, 1, 2
cdef enum:
    _PENDING = 0
    _OK = 1
    _FAILED = 2
    STATUS_OK = 0
    STATUS_NOT_FOUND = 1
    MAX_STATUS = 2


cdef class PlainPath


cdef class PutCore:
    """Acknowledgements of one write until W (and DW durable ones) are met or out of reach:
    the decision half of a replicated write (riak_kv's put_core), pure, no I/O."""
    cdef public int asked, w, dw, acks, durable, failed, outcome

    def __init__(self, int asked, int w, int dw=0):
        self.asked = asked
        self.w = w
        self.dw = dw
        self.acks = self.durable = self.failed = 0
        self.outcome = _PENDING
        self._decide()

    cpdef int ack(self, bint durable=False):
        self.acks += 1
        self.durable += durable
        return self._decide()

    cpdef int fail(self):
        self.failed += 1
        return self._decide()

    cdef int _decide(self):
        cdef int left
        if self.outcome == _PENDING:
            if self.acks >= self.w and self.durable >= self.dw:
                self.outcome = _OK
            else:
                left = self.asked - self.acks - self.failed
                if self.acks + left < self.w or self.durable + left < self.dw:
                    self.outcome = _FAILED
        return self.outcome

    def error(self) -> str:
        """The client's error line for a failed write: who answered out of how many needed."""
        if self.acks < self.w:
            return (f"ERR quorum not reached: {self.acks} of {self.w} required replicas "
                    f"acknowledged the write ({self.asked} reachable)")
        return (f"ERR quorum not reached: {self.durable} of {self.dw} required replicas "
                f"made the write durable ({self.asked} reachable)")


cdef class Write:
    """One key's replicated write: acknowledgements feed its PutCore. A primary that fails
    gets a hint kept by the coordinator (counting toward W only when the coordinator is not
    itself one of the write's replicas); a replica that answers a newer plain write makes the
    write run once more through `restamp(newer stamp)`."""
    cdef public object coord, key, data, pending, restamp
    cdef public PutCore core
    cdef public bint in_targets, durable
    cdef public object newer

    def __init__(self, coord, key, data, PutCore core):
        _init_write(self, coord, key, data, core, None)

    cpdef result(self):
        """What the coordinator returns once the targets are asked: None when the write is
        done already, its Pending otherwise; raises the quorum error of a write that failed."""
        pending = self.pending
        if pending.done:
            if isinstance(pending.result, CommandError):
                raise pending.result
            return None
        return pending

    def on_ack(self, target, result):
        """result: (status, blob) from the target, or an exception."""
        if isinstance(result, Exception):
            self._answered(target, -1, None)
        else:
            self._answered(target, result[0], result[1])

    cdef int _answered(self, object target, int status, object blob) except -1:
        cdef PutCore core = self.core
        if status == STATUS_OK:
            if blob and self.restamp is not None:
                try:
                    self.newer = max(self.newer, newest_stamp(blob))
                except BadObject:
                    pass
            core.ack(self.durable)
        elif target.hint_for is None and self.coord._keep_hint(target.node, self.key,
                                                               self.data) \
                and not self.in_targets:
            core.ack(False)
        else:
            core.fail()
        self.settle()
        return 0

    cpdef settle(self):
        pending = self.pending
        if pending.done:
            return
        cdef PutCore core = self.core
        if core.outcome == _OK:
            if self.newer:
                if self.restamp is not None:     # once: later acknowledgements find it gone
                    self._again()
            else:
                pending.complete(None)
        elif core.outcome == _FAILED:
            self.coord.stats["quorum_failures"] += 1
            pending.complete(CommandError(core.error()))

    cdef _again(self):
        restamp, self.restamp = self.restamp, None
        try:
            result = restamp(self.newer)
        except CommandError as exc:
            self.pending.complete(exc)
            return
        if result.__class__ is Pending:
            result.add_done_callback(self.pending.complete)
        else:
            self.pending.complete(None)


cdef class GetCore:
    """The decision half of a replicated read (riak_kv's get_core): pure, no I/O.

    Replies are canonical object encodings (bytes; None when a replica holds nothing), so two
    replicas agree exactly when their bytes are equal. The read answers as soon as R replicas
    have replied, with the merge of what they sent; replies that arrive afterwards still count
    for read repair: once every asked replica has answered (or the deadline passed), every
    replica whose object differs from the merge of all replies is sent that merge."""
    cdef public int asked, r, failed, outcome
    cdef public object merge, result
    cdef public dict replies

    def __init__(self, int asked, int r, merge):
        """merge(list of bytes or None) -> bytes or None: the sync of every reply."""
        self.asked = asked
        self.r = r
        self.merge = merge
        self.replies = {}
        self.failed = 0
        self.outcome = _PENDING
        self.result = None
        self._decide()

    cpdef int reply(self, node, obj) except -1:
        self.replies[node] = obj
        return self._decide()

    cpdef int fail(self, node) except -1:
        self.failed += 1
        return self._decide()

    @property
    def finished(self) -> bool:
        """Every asked replica has answered or failed: read repair can run."""
        return len(self.replies) + self.failed >= self.asked

    cdef int _decide(self) except -1:
        if self.outcome == _PENDING:
            if len(self.replies) >= self.r:
                self.outcome = _OK
                self.result = self._merged()
            elif self.asked - self.failed < self.r:
                self.outcome = _FAILED
        return self.outcome

    cdef object _merged(self):
        cdef list replies = list(self.replies.values())
        if self.merge is _MERGE_ENCODED:
            return _merge_encoded(replies)
        return self.merge(replies)

    cdef int _agree(self) except -1:
        """Every reply so far is the same encoding (or absent everywhere): with the
        coordinator's merge, nothing to repair."""
        cdef object first = None
        cdef bint seen = False
        for obj in self.replies.values():
            if not seen:
                first, seen = obj, True
            elif obj is not first and (obj is None or first is None
                                       or type(obj) is not bytes or type(first) is not bytes
                                       or <bytes>obj != <bytes>first):
                return False
        return True

    def repairs(self):
        """(merged, [nodes whose reply differs]) over every reply received so far."""
        merged = self._merged()
        if merged is None:
            return None, []
        return merged, [node for node, obj in self.replies.items() if obj != merged]

    def error(self) -> str:
        return (f"ERR quorum not reached: {len(self.replies)} of {self.r} required replicas "
                f"answered the read ({self.asked} reachable)")


cdef class Read:
    """One key's replicated read: replies feed its GetCore; the result (or answer(result))
    completes `pending` at R replies; read repair once every asked replica has answered."""
    cdef public object coord, key, answer, pending
    cdef public GetCore core
    cdef bint repair

    def __init__(self, coord, key, GetCore core, answer):
        self.coord = coord
        self.key = key
        self.core = core
        self.answer = answer
        self.pending = Pending()
        self.repair = True

    def on_reply(self, node, result):
        """result: (status, blob) from node, or an exception."""
        if isinstance(result, Exception):
            self._answered(node, -1, None)
        else:
            self._answered(node, result[0], result[1])

    cdef int _answered(self, node, int status, blob) except -1:
        if status == STATUS_OK:
            self.core.reply(node, blob if type(blob) is bytes else bytes(blob))
        elif status == STATUS_NOT_FOUND:
            self.core.reply(node, None)
        else:
            self.core.fail(node)
        self.settle()
        return 0

    cpdef settle(self):
        cdef GetCore core = self.core
        pending = self.pending
        if not pending.done:
            if core.outcome == _OK:
                if self.answer is None:
                    pending.complete(core.result)
                else:
                    try:
                        if type(self.answer) is PlainPath:
                            result = (<PlainPath>self.answer).value(core.result)
                        else:
                            result = self.answer(core.result)
                    except Exception as exc:
                        result = exc
                    pending.complete(result)
            elif core.outcome == _FAILED:
                self.coord.stats["quorum_failures"] += 1
                pending.complete(CommandError(core.error()))
        if self.repair and len(core.replies) + core.failed >= core.asked:
            self.repair = False
            if core.merge is not _MERGE_ENCODED or not core._agree():
                self.coord._read_repair(self.key, core)


cdef int _init_write(Write write, coord, key, data, PutCore core, restamp) except -1:
    write.coord = coord
    write.key = key
    write.data = data
    write.core = core
    write.pending = Pending()
    write.in_targets = False
    write.durable = False
    write.restamp = restamp
    write.newer = 0       # the newest write a replica answered in place of this one
    return 0


cdef class Batch:
    """The keys of one batched request: hands each its own result (or the request's
    failure). A key is a Write's acknowledgement (owner a Write, arg its target), read
    straight from the answer's bytes, a Read's reply (arg the replica's name), or
    callback(arg, (status, blob)) for anything else."""
    cdef list owners, args

    def __init__(self, list owners, list args):
        self.owners = owners
        self.args = args

    def split(self, result) -> None:
        cdef list owners = self.owners, args = self.args
        cdef Py_ssize_t i, n = len(owners)
        if isinstance(result, Exception):
            for i in range(n):
                self._deliver(owners[i], args[i], -1, None, result)
            return
        cdef Py_buffer buf
        cdef const unsigned char *p
        cdef Py_ssize_t pos, end, size
        cdef int status
        cdef object view = None, blob
        PyObject_GetBuffer(result, &buf, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>buf.buf
            end = buf.len
            error = _check_results(p, end, n)
            if error is not None:
                for i in range(n):
                    self._deliver(owners[i], args[i], -1, None, error)
                return
            pos = 4
            for i in range(n):
                status = p[pos]
                size = <Py_ssize_t>_u32(p + pos + 1)
                pos += 5
                if size == 0:
                    blob = b""
                elif type(owners[i]) is Read:
                    # a read keeps the replica's object: its bytes, copied once here
                    blob = PyBytes_FromStringAndSize(<const char *>p + pos, size)
                else:
                    if view is None:
                        view = memoryview(result)
                    blob = view[pos:pos + size]
                pos += size
                self._deliver(owners[i], args[i], status, blob, None)
        finally:
            PyBuffer_Release(&buf)

    cdef _deliver(self, owner, arg, int status, blob, failure):
        try:
            if type(owner) is Write:
                (<Write>owner)._answered(arg, status, blob)
            elif type(owner) is Read:
                (<Read>owner)._answered(arg, status, blob)
            elif failure is not None:
                owner(arg, failure)
            else:
                owner(arg, (status, blob))
        except Exception:
            log.exception("replica result callback failed")


cdef inline size_t _u32(const unsigned char *p) noexcept:
    return <size_t>p[0] | (<size_t>p[1] << 8) | (<size_t>p[2] << 16) | (<size_t>p[3] << 24)


cdef object _check_results(const unsigned char *p, Py_ssize_t end, Py_ssize_t expected):
    """None when p holds `expected` well-formed results (messages.pack_results layout), else
    the ProtocolError every key of the batch gets."""
    cdef Py_ssize_t pos = 4, i, n, size
    if end < 4:
        return ProtocolError("peer message truncated in batch count")
    n = <Py_ssize_t>_u32(p)
    if n != expected:
        return ProtocolError(f"{n} results for {expected} keys")
    for i in range(n):
        if end - pos < 5:
            return ProtocolError("peer message truncated in result")
        if p[pos] > MAX_STATUS:
            return ProtocolError(f"peer result has unknown status {p[pos]}")
        size = <Py_ssize_t>_u32(p + pos + 1)
        if size > end - pos - 5:
            return ProtocolError("peer message truncated in result")
        pos += 5 + size
    if pos != end:
        return ProtocolError(f"peer message has {end - pos} unexpected trailing bytes")
    return None


def write_to_primaries(coord, key, data, primaries, list targets, int w, restamp):
    """QuorumCoordinator._write when every primary is reachable and no DW is asked (the
    common case): the local replica synced directly, the others queued in the coordinator's
    outbox for this turn's batched REPLICA_PUT. Pending(None), or None when done already."""
    return _write_to_primaries(coord, coord.name, coord.replica, key, data, primaries, targets,
                               w, restamp)


cdef object _write_to_primaries(coord, name, replica, key, data, primaries, list targets, int w,
                                restamp):
    cdef PutCore core = PutCore(len(targets), w, 0)
    cdef Write write = Write.__new__(Write)
    _init_write(write, coord, key, data, core, restamp)
    write.in_targets = name in primaries
    if core.outcome == _FAILED:
        coord.stats["quorum_failures"] += 1
        raise CommandError(core.error())
    cdef dict box = coord._outbox
    cdef Py_ssize_t i
    item = None
    for i in range(len(targets)):
        # the targets are the primaries themselves, in order: their names without a lookup
        t = targets[i]
        node = (<tuple>primaries)[i] if type(primaries) is tuple else t.node
        if node == name:
            try:
                if (type(key) is not bytes or not isinstance(replica, ReplicaCore)
                        or (<ReplicaCore>replica).merge_plain(key, data) is None):
                    replica.merge_in(key, data)
                core.ack(False)
            except (StorageError, HintStoreFull) as exc:
                if coord.log:
                    coord.log.warning("local replica write of %r failed: %s", key, exc)
                core.fail()
            continue
        if item is None:
            item = (key, data)
        _queue(coord, box, node, REPLICA_PUT, item, write, t)
    write.settle()
    return write.result()


cdef int _queue(coord, dict box, node, int kind, item, owner, arg) except -1:
    """One key's request to node in the coordinator's outbox of this turn (see
    QuorumCoordinator._send)."""
    if not box:
        coord.pool.loop.call_soon(coord._flush_outbox)
    slot = (node, kind)
    entry = box.get(slot)
    if entry is None:
        box[slot] = entry = ([], [], [])
    (<list>entry[0]).append(item)
    (<list>entry[1]).append(owner)
    (<list>entry[2]).append(arg)
    return 0


def queue_request(coord, node, int kind, item, owner, arg):
    """QuorumCoordinator._send: `_queue` in the coordinator's current outbox."""
    _queue(coord, coord._outbox, node, kind, item, owner, arg)


def read_quorum(coord, key, list targets, int r, answer, merge):
    """QuorumCoordinator._read over targets: the local replica (with any hint kept for the
    primary it stands in for) read directly, the others asked in this turn's batched
    REPLICA_GET. The merged encoding (or answer(it)) when R is met at once, else a Pending."""
    return _read_quorum(coord, coord.name, coord.replica, key, targets, None, r, answer, merge)


cdef object _read_quorum(coord, name, replica, key, list targets, tuple names, int r, answer,
                         merge):
    """names: the targets' node names, when the targets are those primaries (else None)."""
    cdef GetCore core = GetCore(len(targets), r, merge)
    cdef Read read = Read(coord, key, core, answer)
    if core.outcome == _FAILED:
        raise CommandError(core.error())
    cdef dict box = coord._outbox
    cdef Py_ssize_t i
    for i in range(len(targets)):
        t = targets[i]
        node = t.node if names is None else names[i]
        if node != name:
            _queue(coord, box, node, REPLICA_GET, key, read, node)
            continue
        try:
            data = ((<ReplicaCore>replica).store.get(key) if isinstance(replica, ReplicaCore)
                    else replica.get(key))
            if t.hint_for is not None:
                data = merge([data, coord.hints.get(t.hint_for, key)])
            core.reply(name, data)
        except StorageError:
            core.fail(name)
    read.settle()
    pending = read.pending
    if pending.done and not isinstance(pending.result, Exception):
        return pending.result
    return pending


cdef class _Restamp:
    """A plain write's second stamp (QuorumCoordinator._lww's restamp): the write again, above
    the newer one a replica answered."""
    cdef object coord, key, value

    def __call__(self, newer):
        coord = self.coord
        coord.hlc.observe(newer)
        coord.stats["lww_restamps"] += 1
        return coord._lww(self.key, self.value, 0, False, None, again=False)


@cython.final
cdef class PlainPath:
    """What a plain GET or SET needs of its coordinator in the common case (every member
    reachable, the default R and W), kept at C level so the operation runs without a Python
    call: each partition's primaries and their targets and the effective quorum, for the ring
    they were derived from. A new ring (the only way the member count changes: Members.add)
    derives them again; while a peer is down (pool.down) the coordinator's Python path
    decides."""
    cdef object coord, members, pool, ring, hlc, name, replica
    cdef list primaries     # per partition: its first n members (the ring's shared tuple)
    cdef list targets       # per partition: [Target(node, None), ...] of those primaries
    cdef int bits, n, r, w, dw
    cdef unsigned long long node

    def __init__(self, coord):
        self.coord = coord
        self.members = coord.members
        self.hlc = coord.hlc
        self.node = coord.node
        self.name = coord.name
        self.replica = coord.replica
        self.pool = None
        self.ring = None

    def __call__(self, data):
        return self.value(data)

    cdef object value(self, data):
        """GET's answer from the merged encoding (QuorumCoordinator._value): a plain SET's
        register that the flush epoch leaves visible read from its header here (object.py's
        plain_value), anything else decided by the coordinator."""
        cdef const unsigned char *p
        cdef uint64_t ts = 0
        cdef int i
        if data is None:
            return None
        if type(data) is bytes and PyBytes_GET_SIZE(data) >= 17:
            p = <const unsigned char *>PyBytes_AS_STRING(data)
            if p[0] == 0xA1:
                for i in range(8):
                    ts |= (<uint64_t>p[9 + i]) << (8 * i)
                if ts and ts <= _MAX_TIMESTAMP and ts >= <uint64_t>self.replica.flush_epoch:
                    return PyBytes_FromStringAndSize(<char *>p + 17, PyBytes_GET_SIZE(data) - 17)
        return self.coord._value(data)

    cdef int derive(self, ring) except -1:
        q = self.coord.quorum()
        self.n, self.r, self.w = q.n, q.r, q.w
        self.dw = self.coord.dw
        self.primaries = list(ring.prefixes(self.n))
        shared = {}
        self.targets = []
        for names in self.primaries:
            targets = shared.get(names)
            if targets is None:
                targets = shared[names] = [Target(node, None) for node in names]
            self.targets.append(targets)
        self.bits = (<int>ring.partition_count).bit_length() - 1
        self.ring = ring
        return 0

    cdef Py_ssize_t partition(self, bytes key) except -2:
        """key's partition when every member is reachable (its targets are its primaries),
        else -1."""
        cdef uint64_t h
        ring = self.members.ring
        if ring is not self.ring:
            self.derive(ring)
        pool = self.pool
        if pool is None:
            pool = self.pool = self.coord.pool
            if pool is None:
                return -1
        if pool.down:
            return -1
        if self.bits == 0:
            return 0
        h = fd_xxh64(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key), FD_KEY_SEED)
        return <Py_ssize_t>(h >> (64 - self.bits))

    def targets_of(self, key):
        """key's targets as a plain GET or SET would take them here, or None where the
        coordinator's Python path decides."""
        cdef Py_ssize_t p = self.partition(key) if plain_key(key) else -1
        return None if p < 0 else (self.primaries[p], self.targets[p], self.r, self.w)


cdef Py_ssize_t MAX_KEY = MAX_KEY_BYTES
cdef uint64_t _MAX_TIMESTAMP = MAX_TIMESTAMP


def merge_encoded(items):
    """Sync of several encodings (None = absent) -> canonical bytes, or None. Replicas that
    agree byte for byte (the common case) need no decoding."""
    return _merge_encoded(items if type(items) is list else list(items))


cdef object _MERGE_ENCODED = merge_encoded


cdef object _merge_encoded(list items):
    cdef object first = None
    cdef bint agree = True
    for x in items:
        if x:
            if first is None:
                first = x
            elif x != first:
                agree = False
                break
    if first is None:
        return None
    if agree:
        return bytes(first)
    present = [x for x in items if x]
    obj = vo.decode(present[0])
    for x in present[1:]:
        obj = vo.sync(obj, vo.decode(x))
    return vo.encode(obj)


cdef inline bint plain_key(key) noexcept:
    return type(key) is bytes and 0 < PyBytes_GET_SIZE(key) <= MAX_KEY


def coordinator_get(coord, key):
    """QuorumCoordinator.get: a read of key from R replicas, answered with its value. The
    common case is C from end to end; the rest is QuorumCoordinator._get."""
    cdef PlainPath plain
    cdef Py_ssize_t p
    if plain_key(key):
        plain = coord._plain
        p = plain.partition(key)
        if p >= 0:
            return _read_quorum(coord, plain.name, plain.replica, key, <list>plain.targets[p],
                                <tuple>plain.primaries[p], plain.r, plain, _MERGE_ENCODED)
    return coord._get(key)


def coordinator_put(coord, key, value, expiry_ms=0):
    """QuorumCoordinator.put: a value without expiry (a plain SET) has its register's bytes
    (object.py: tag 0xA1, node, stamp, value) made here and is written to the primaries
    directly in the common case; the rest is QuorumCoordinator._put."""
    if expiry_ms or type(value) is not bytes or not plain_key(key):
        return coord._put(key, value, expiry_ms)
    cdef PlainPath plain = coord._plain
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef unsigned long long node = plain.node
    cdef unsigned long long ts = plain.hlc.now()
    cdef bytes data = PyBytes_FromStringAndSize(NULL, 17 + n)
    cdef char *p = PyBytes_AS_STRING(data)
    cdef int i
    p[0] = <char>0xA1
    for i in range(8):
        p[1 + i] = <char>((node >> (8 * i)) & 0xFF)
        p[9 + i] = <char>((ts >> (8 * i)) & 0xFF)
    memcpy(p + 17, PyBytes_AS_STRING(value), n)
    cdef _Restamp restamp = _Restamp.__new__(_Restamp)
    restamp.coord = coord
    restamp.key = key
    restamp.value = value
    cdef Py_ssize_t part = plain.partition(key)
    if part >= 0 and not plain.dw:
        moves = plain.members.moves
        if moves and part in moves:
            coord._write_to_receivers(key, data)    # a handoff moves it: they get it too
        return _write_to_primaries(coord, plain.name, plain.replica, key, data,
                                   plain.primaries[part],
                                   <list>plain.targets[part], plain.w, restamp)
    return coord._write(key, data, restamp=restamp)
