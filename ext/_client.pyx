# cython: language_level=3
"""Client-side wire codec: RESP command encoder, RESP2/RESP3 and memcached reply readers.

The readers are sans-IO (bytes in, replies out). `skip()` counts many pipelined replies in
one call without building Python objects, which is what a load generator needs; `gets()`
parses one reply into Python values for a client library.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcpy, memmove

from fastdyn.errors import ProtocolError, ReplyError


from client_wire cimport (FD_REPLY_OK, FD_REPLY_ERROR, FD_REPLY_NIL, FD_REPLY_PUSH,
                         fd_resp_skip, fd_mc_skip, fd_read_int_line, fd_mc_value_bytes)


class _Incomplete:
    """gets() returns INCOMPLETE when no whole reply has arrived (False is a RESP3 reply)."""
    __slots__ = ()

    def __repr__(self):
        return "INCOMPLETE"

    def __bool__(self):
        return False


INCOMPLETE = _Incomplete()


cdef bytes _as_bytes(object arg):
    if isinstance(arg, bytes):
        return <bytes>arg
    if isinstance(arg, str):
        return (<str>arg).encode("utf-8")
    if isinstance(arg, bool):
        raise TypeError("a RESP argument cannot be a bool; send b'1' / b'0' explicitly")
    if isinstance(arg, (int, float)):
        return repr(arg).encode("ascii")
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    raise TypeError(f"a RESP argument must be bytes, str, int or float, not {type(arg).__name__}")


cdef Py_ssize_t _digits(Py_ssize_t n) noexcept:
    cdef Py_ssize_t d = 1
    while n >= 10:
        n //= 10
        d += 1
    return d


cdef char *_put_header(char *out, char tag, Py_ssize_t n) noexcept:
    """Writes "<tag><n>\\r\\n" and returns the position after it."""
    cdef Py_ssize_t d = _digits(n)
    cdef Py_ssize_t i
    out[0] = tag
    for i in range(d, 0, -1):
        out[i] = <char>(48 + n % 10)
        n //= 10
    out[d + 1] = b'\r'
    out[d + 2] = b'\n'
    return out + d + 3


def encode_command(args):
    """One command as a RESP array of bulk strings: encode_command([b"SET", b"k", b"v"])."""
    cdef list parts = [_as_bytes(a) for a in args]
    cdef Py_ssize_t total = 3 + _digits(len(parts))
    cdef bytes part
    if not parts:
        raise ValueError("a command needs at least its name")
    for part in parts:
        total += 5 + _digits(PyBytes_GET_SIZE(part)) + PyBytes_GET_SIZE(part)
    cdef bytes result = PyBytes_FromStringAndSize(NULL, total)
    cdef char *out = PyBytes_AS_STRING(result)
    out = _put_header(out, b'*', len(parts))
    for part in parts:
        out = _put_header(out, b'$', PyBytes_GET_SIZE(part))
        memcpy(out, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part))
        out += PyBytes_GET_SIZE(part)
        out[0] = b'\r'
        out[1] = b'\n'
        out += 2
    return result


def encode_pipeline(commands):
    """Several commands back to back, to be sent in one write."""
    return b"".join([encode_command(c) for c in commands])


cdef class _Buffer:
    """Bytes received but not yet consumed; compacted lazily so appends stay amortised O(1)."""
    cdef char *data
    cdef Py_ssize_t start, end, cap

    def __dealloc__(self):
        free(self.data)

    cdef int append(self, const char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self.end - self.start
        cdef Py_ssize_t cap
        cdef char *grown
        if self.end + n > self.cap:
            if self.start and live + n <= self.cap:
                memmove(self.data, self.data + self.start, live)
            else:
                cap = max(self.cap * 2, live + n, 4096)
                if self.start:
                    memmove(self.data, self.data + self.start, live)
                grown = <char *>realloc(self.data, cap)
                if grown == NULL:
                    raise MemoryError()
                self.data = grown
                self.cap = cap
            self.start = 0
            self.end = live
        memcpy(self.data + self.end, p, n)
        self.end += n
        return 0

    cdef void consume_to(self, const char *p) noexcept:
        self.start = p - self.data
        if self.start == self.end:
            self.start = self.end = 0


cdef class _Reader:
    """Shared feed/skip machinery; subclasses choose the scanner and the Python parser."""
    cdef _Buffer buf
    cdef readonly long long errors
    cdef readonly long long nils

    def __cinit__(self):
        self.buf = _Buffer()

    def feed(self, data):
        """Appends received bytes (bytes, bytearray or memoryview)."""
        cdef const unsigned char[::1] view = memoryview(data).cast("B")
        if view.shape[0]:
            self.buf.append(<const char *>&view[0], view.shape[0])

    @property
    def pending(self):
        """How many received bytes are not yet consumed."""
        return self.buf.end - self.buf.start

    cdef const char *scan(self, const char *p, const char *end, int *kind, int *bad) noexcept:
        return NULL

    def skip(self, Py_ssize_t max_replies=-1):
        """Consumes up to max_replies whole replies (all if negative) without parsing them.

        Returns how many were consumed; error replies are added to `.errors` and nil replies
        (missing keys) to `.nils`. RESP3 push messages are consumed but not counted.
        """
        cdef const char *p = self.buf.data + self.buf.start
        cdef const char *end = self.buf.data + self.buf.end
        cdef const char *nxt
        cdef int kind = 0, bad = 0
        cdef Py_ssize_t count = 0
        while max_replies < 0 or count < max_replies:
            nxt = self.scan(p, end, &kind, &bad)
            if nxt == NULL:
                break
            p = nxt
            if kind == FD_REPLY_PUSH:
                continue
            count += 1
            if kind == FD_REPLY_ERROR:
                self.errors += 1
            elif kind == FD_REPLY_NIL:
                self.nils += 1
        self.buf.consume_to(p)
        if bad:
            raise ProtocolError(f"invalid reply near {self._near(p, end)!r}")
        return count

    cdef bytes _near(self, const char *p, const char *end):
        return PyBytes_FromStringAndSize(p, min(end - p, 40))

    def gets(self):
        """The next whole reply as Python values, or INCOMPLETE if it has not fully arrived.

        Error replies are returned (not raised) as ReplyError instances, like hiredis does,
        so one failed command in a pipeline does not hide the others' replies.
        """
        cdef const char *p = self.buf.data + self.buf.start
        cdef const char *end = self.buf.data + self.buf.end
        cdef int kind = 0, bad = 0
        cdef const char *nxt = self.scan(p, end, &kind, &bad)
        if nxt == NULL:
            if bad:
                raise ProtocolError(f"invalid reply near {self._near(p, end)!r}")
            return INCOMPLETE
        value = self.parse(p, nxt)
        self.buf.consume_to(nxt)
        return value

    cdef object parse(self, const char *p, const char *end):
        raise NotImplementedError


cdef class RespReader(_Reader):
    """Reads RESP2 and RESP3 replies."""

    cdef const char *scan(self, const char *p, const char *end, int *kind, int *bad) noexcept:
        return fd_resp_skip(p, end, 0, kind, bad)

    cdef object parse(self, const char *p, const char *end):
        cdef const char *q = p
        return self._value(&q, end)

    cdef object _line(self, const char **pp, const char *end):
        cdef const char *p = pp[0]
        cdef const char *cr = <const char *>memchr(p, b'\r', end - p)
        pp[0] = cr + 2
        return PyBytes_FromStringAndSize(p, cr - p)

    cdef object _value(self, const char **pp, const char *end):
        # the scanner has validated the whole reply, so this walk needs no bounds checks
        cdef char t = pp[0][0]
        cdef int64_t n = 0
        cdef int bad = 0
        cdef const char *q
        pp[0] += 1
        if t == b'+':
            return self._line(pp, end)
        if t == b'-':
            return ReplyError(self._line(pp, end).decode("utf-8", "replace"))
        if t == b':' or t == b'(':
            return int(self._line(pp, end))
        if t == b',':
            return float(self._line(pp, end))
        if t == b'#':
            return self._line(pp, end) == b"t"
        if t == b'_':
            self._line(pp, end)
            return None
        if t == b'$' or t == b'!' or t == b'=':
            q = fd_read_int_line(pp[0], end, &n, &bad)
            if n < 0:
                pp[0] = q
                return None
            data = PyBytes_FromStringAndSize(q, n)
            pp[0] = q + n + 2
            if t == b'!':
                return ReplyError(data.decode("utf-8", "replace"))
            if t == b'=':
                return data[4:]  # drop the "txt:" format prefix of a verbatim string
            return data
        q = fd_read_int_line(pp[0], end, &n, &bad)
        pp[0] = q
        if n < 0:
            return None
        if t == b'%' or t == b'|':
            result = {}
            for _ in range(n):
                key = self._value(pp, end)
                result[key if not isinstance(key, list) else tuple(key)] = self._value(pp, end)
            if t == b'|':
                return self._value(pp, end)  # attributes annotate the next value; drop them
            return result
        items = [self._value(pp, end) for _ in range(n)]
        if t == b'~':
            try:
                return set(items)
            except TypeError:
                return items
        return items


cdef class MemcacheReader(_Reader):
    """Reads memcached text-protocol replies.

    gets() returns a list of (key, flags, value) for a retrieval reply (empty on a miss), a
    dict for STAT blocks, a ReplyError for ERROR/CLIENT_ERROR/SERVER_ERROR, else the line.
    """

    cdef const char *scan(self, const char *p, const char *end, int *kind, int *bad) noexcept:
        return fd_mc_skip(p, end, kind, bad)

    cdef object parse(self, const char *p, const char *end):
        cdef list values = []
        cdef dict stats = {}
        cdef const char *lf
        cdef int64_t n
        while p < end:
            lf = <const char *>memchr(p, b'\n', end - p)
            line = PyBytes_FromStringAndSize(p, lf - 1 - p)
            p = lf + 1
            if line.startswith(b"VALUE "):
                n = fd_mc_value_bytes(PyBytes_AS_STRING(line), len(line))
                fields = line.split(b" ")
                if not fields[2].isdigit():
                    raise ProtocolError(f"invalid VALUE line {line[:80]!r}")
                values.append((fields[1], int(fields[2]), PyBytes_FromStringAndSize(p, n)))
                p += n + 2
            elif line.startswith(b"STAT "):
                fields = line.split(b" ", 2)
                stats[fields[1]] = fields[2] if len(fields) > 2 else b""
            elif line == b"END":
                return stats if stats else values
            elif line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
                return ReplyError(line.decode("utf-8", "replace"))
            else:
                return line
        return values
