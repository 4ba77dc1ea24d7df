# cython: language_level=3
"""Server-side RESP codec: a request parser and a reply writer, both sans-IO.

RequestParser turns received bytes into commands (lists of bytes). It accepts RESP arrays of
bulk strings and inline commands, keeps its state across partial frames and parses every
complete pipelined command of a buffer in one call. It enforces Redis' protocol limits and
reports a malformed frame with Redis' own "Protocol error: ..." text; the caller replies with it
and closes the connection.

ReplyWriter encodes replies into one growing C buffer per event-loop turn, in RESP2 or (after
HELLO 3) RESP3; take() hands the bytes for a single transport.write.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memmove, memchr
from libc.stdio cimport snprintf
from libc.math cimport isinf, isnan
from libc cimport errno as c_errno
from libc.stdint cimport uint64_t

cdef extern from "decimal.h":
    char *put_uint(char *p, uint64_t v) noexcept nogil

# Redis' limits (networking.c): header lines and inline requests are bounded by PROTO_INLINE_MAX,
# clients that still have to authenticate may send only small requests.
cdef Py_ssize_t INLINE_MAX = 64 * 1024
cdef long long INT_MAX_ = 2147483647
cdef long long UNAUTH_MAX_ARGS = 10
cdef long long UNAUTH_MAX_BULK = 16384
# What one parsed argument costs besides its bytes (a bytes object and its list slot): an
# unfinished `*N` frame of tiny arguments must not outgrow the query buffer limit.
cdef Py_ssize_t ARG_OVERHEAD = 48
cdef str QUERY_LIMIT = "query buffer limit reached"
QUERY_LIMIT_ERROR = "Protocol error: " + QUERY_LIMIT


cdef inline int parse_ll(const char *s, Py_ssize_t n, long long *out) noexcept:
    """Strict decimal integer like Redis' string2ll: optional '-', digits, no spaces, no '+'.
    Returns 0 on success, -1 when the text is not such an integer or overflows."""
    cdef Py_ssize_t i = 0
    cdef bint neg = False
    cdef unsigned long long v = 0
    cdef unsigned long long limit
    cdef int d
    if n <= 0 or n > 20:
        return -1
    if s[0] == b'-':
        neg = True
        i = 1
        if n == 1:
            return -1
    # no leading zeros, and no "-0" (Redis' string2ll refuses both)
    if s[i] == b'0' and (n - i > 1 or neg):
        return -1
    while i < n:
        d = s[i] - 48
        if d < 0 or d > 9:
            return -1
        if v > 1844674407370955161ULL or (v == 1844674407370955161ULL and d > 5):
            return -1
        v = v * 10 + d
        i += 1
    if neg:
        if v > 9223372036854775808ULL:
            return -1
        out[0] = <long long>(0 - v)
    else:
        if v > 9223372036854775807ULL:
            return -1
        out[0] = <long long>v
    return 0


def parse_int(bytes s):
    """The integer value of s under Redis' rules, or None (the caller answers 'not an integer')."""
    cdef long long v
    if parse_ll(PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s), &v) != 0:
        return None
    return v


cdef inline int hex_digit(char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef inline bint is_space(char c) noexcept:
    return c == b' ' or c == b'\n' or c == b'\r' or c == b'\t' or c == b'\v' or c == b'\f'


cdef list split_inline(const char *p, Py_ssize_t n):
    """Split an inline command line the way redis-cli quotes it (Redis' sdssplitargs):
    whitespace separates words, "..." understands \\n \\r \\t \\b \\a \\\\ \\" \\xHH, '...'
    understands \\'. Returns None on unbalanced quotes or a quote not followed by a space."""
    cdef list out = []
    cdef Py_ssize_t i = 0
    cdef bytearray word
    cdef char c
    cdef int h1, h2
    cdef bint inq, insq, done
    while True:
        while i < n and is_space(p[i]):
            i += 1
        if i >= n:
            return out
        word = bytearray()
        inq = False
        insq = False
        done = False
        while not done:
            if inq:
                if i >= n:
                    return None
                c = p[i]
                if c == b'\\' and i + 3 < n and p[i + 1] == b'x' and hex_digit(p[i + 2]) >= 0 \
                        and hex_digit(p[i + 3]) >= 0:
                    word.append(hex_digit(p[i + 2]) * 16 + hex_digit(p[i + 3]))
                    i += 3
                elif c == b'\\' and i + 1 < n:
                    i += 1
                    c = p[i]
                    if c == b'n':
                        c = b'\n'
                    elif c == b'r':
                        c = b'\r'
                    elif c == b't':
                        c = b'\t'
                    elif c == b'b':
                        c = b'\b'
                    elif c == b'a':
                        c = b'\a'
                    word.append(<unsigned char>c)
                elif c == b'"':
                    # a closing quote must be followed by a space or the end
                    if i + 1 < n and not is_space(p[i + 1]):
                        return None
                    done = True
                else:
                    word.append(<unsigned char>c)
            elif insq:
                if i >= n:
                    return None
                c = p[i]
                if c == b'\\' and i + 1 < n and p[i + 1] == b"'":
                    i += 1
                    word.append(39)
                elif c == b"'":
                    if i + 1 < n and not is_space(p[i + 1]):
                        return None
                    done = True
                else:
                    word.append(<unsigned char>c)
            else:
                if i >= n:
                    done = True
                    break
                c = p[i]
                if is_space(c):
                    done = True
                elif c == b'"':
                    inq = True
                elif c == b"'":
                    insq = True
                else:
                    word.append(<unsigned char>c)
            if i < n:
                i += 1
        out.append(bytes(word))


cdef class RequestParser:
    """Incremental RESP request parser (sans-IO).

    parse(data, limit) appends data to the query buffer and returns the complete commands found,
    at most `limit` of them (0 = all); feed(data) only appends. After a malformed frame, `error`
    holds Redis' message (without the "-ERR " prefix) and every later call returns nothing: the
    connection must be closed once the commands returned before the error have been answered.

    The query buffer limit `max_query` covers the unread bytes, the arguments already parsed
    for an unfinished command (each its length plus ARG_OVERHEAD) and `queued_bytes`, what the
    connection holds for later (the commands queued by MULTI), as Redis counts them.
    """
    # fields: see fastdyn._resp.pxd

    def __cinit__(self):
        self.buf = NULL
        self.start = self.end = self.cap = 0
        self.args = None
        self.mb_left = 0
        self.bulk_len = -1
        self.args_bytes = 0
        self.queued_bytes = 0

    def __init__(self, long long max_bulk=512 * 1024 * 1024, long long max_query=1024 * 1024 * 1024,
                 bint auth_required=False):
        self.max_bulk = max_bulk
        self.max_query = max_query
        self.auth_required = auth_required
        self.error = None

    def __dealloc__(self):
        free(self.buf)

    @property
    def buffered(self):
        """Bytes received but not yet consumed (the query buffer)."""
        return self.end - self.start

    cdef int reserve(self, Py_ssize_t extra) except -1:
        """Make room for `extra` more bytes after `end`, sliding unread bytes to the front."""
        cdef Py_ssize_t used = self.end - self.start
        cdef Py_ssize_t need = used + extra
        cdef Py_ssize_t ncap
        cdef char *nbuf
        if self.start > 0 and (self.cap - self.end < extra):
            if used:
                memmove(self.buf, self.buf + self.start, used)
            self.start = 0
            self.end = used
        if need > self.cap:
            ncap = self.cap * 2 if self.cap else 16384
            while ncap < need:
                ncap *= 2
            nbuf = <char *>realloc(self.buf, ncap)
            if nbuf == NULL:
                raise MemoryError()
            self.buf = nbuf
            self.cap = ncap
        return 0

    cdef int fail(self, msg) except -1:
        self.error = "Protocol error: " + msg
        self.start = self.end = 0
        self.args = None
        self.args_bytes = 0
        self.mb_left = 0
        self.bulk_len = -1
        return 0

    cdef bint over_limit(self, Py_ssize_t extra) noexcept:
        return self.end - self.start + self.args_bytes + self.queued_bytes + extra \
            > self.max_query

    cdef int append(self, data) except -1:
        """Add received bytes to the query buffer (unless that passes the limit: then fail)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len:
                if self.over_limit(view.len):
                    self.fail(QUERY_LIMIT)
                    return 0
                self.reserve(view.len)
                memcpy(self.buf + self.end, view.buf, view.len)
                self.end += view.len
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int charge(self, list args) except -1:
        """Count a command held for later (queued by MULTI) toward the query buffer limit."""
        for arg in args:
            self.queued_bytes += PyBytes_GET_SIZE(arg) + ARG_OVERHEAD
        return 0

    def feed(self, data):
        """Buffer data without parsing it (commands before it still wait to run)."""
        if self.error is None:
            self.append(data)

    def parse(self, data, Py_ssize_t limit=0):
        cdef list out = []
        cdef const char *p
        cdef const char *nl
        cdef Py_ssize_t avail, linelen
        cdef long long ll
        cdef list words
        if self.error is not None:
            return out
        self.append(data)
        if self.error is not None:
            return out

        while self.start < self.end:
            if limit and len(out) >= limit:
                break
            p = self.buf + self.start
            avail = self.end - self.start
            if self.mb_left == 0:
                if p[0] == b'*':
                    nl = <const char *>memchr(p, b'\r', avail)
                    if nl == NULL or nl + 1 >= p + avail:
                        if avail > INLINE_MAX:
                            self.fail("too big mbulk count string")
                        break
                    if parse_ll(p + 1, nl - p - 1, &ll) != 0 or ll > INT_MAX_:
                        self.fail("invalid multibulk length")
                        break
                    if ll > UNAUTH_MAX_ARGS and self.auth_required:
                        self.fail("unauthenticated multibulk length")
                        break
                    self.start += (nl - p) + 2
                    if ll <= 0:
                        continue
                    self.mb_left = ll
                    self.args = []
                    self.bulk_len = -1
                else:
                    nl = <const char *>memchr(p, b'\n', avail)
                    if nl == NULL:
                        if avail > INLINE_MAX:
                            self.fail("too big inline request")
                        break
                    linelen = nl - p
                    if linelen and p[linelen - 1] == b'\r':
                        linelen -= 1
                    words = split_inline(p, linelen)
                    if words is None:
                        self.fail("unbalanced quotes in request")
                        break
                    self.start += (nl - p) + 1
                    if words:
                        if self.auth_required and len(words) > UNAUTH_MAX_ARGS:
                            self.fail("unauthenticated multibulk length")
                            break
                        out.append(words)
                    continue
            # inside a multibulk frame: read bulk strings until it is complete
            while self.mb_left > 0:
                p = self.buf + self.start
                avail = self.end - self.start
                if self.bulk_len < 0:
                    if avail == 0:
                        break
                    if p[0] != b'$':
                        self.fail("expected '$', got '%s'" % chr(<unsigned char>p[0]))
                        break
                    nl = <const char *>memchr(p, b'\r', avail)
                    if nl == NULL or nl + 1 >= p + avail:
                        if avail > INLINE_MAX:
                            self.fail("too big bulk count string")
                        break
                    if parse_ll(p + 1, nl - p - 1, &ll) != 0 or ll < 0 or ll > self.max_bulk:
                        self.fail("invalid bulk length")
                        break
                    if ll > UNAUTH_MAX_BULK and self.auth_required:
                        self.fail("unauthenticated bulk length")
                        break
                    self.start += (nl - p) + 2
                    self.bulk_len = ll
                    continue
                if avail < self.bulk_len + 2:
                    # wait for the rest; grow once so a big value is not copied many times
                    self.reserve(self.bulk_len + 2 - avail)
                    break
                PyList_Append(self.args, PyBytes_FromStringAndSize(p, self.bulk_len))
                self.start += self.bulk_len + 2
                self.args_bytes += self.bulk_len + ARG_OVERHEAD
                self.bulk_len = -1
                self.mb_left -= 1
                if self.mb_left and self.over_limit(0):
                    self.fail(QUERY_LIMIT)
                    break
            if self.error is not None:
                break
            if self.mb_left == 0 and self.args is not None:
                out.append(self.args)
                self.args = None
                self.args_bytes = 0
            else:
                break
        if self.start == self.end:
            self.start = self.end = 0
            if self.cap > (1 << 20):
                # a big value came through: do not keep its buffer for the connection's life
                free(self.buf)
                self.buf = NULL
                self.cap = 0
        return out


cdef class ReplyWriter:
    """Encodes replies into one buffer; `proto` is 2 (RESP2) or 3 (RESP3 after HELLO 3).

    RESP3-only types degrade the way Redis degrades them for RESP2 clients: null → $-1 (or *-1
    for null_array), map → flat array, set → array, double → bulk string, boolean → 1/0.
    """
    # fields: see fastdyn._resp.pxd

    def __cinit__(self):
        self.buf = <char *>malloc(4096)
        if self.buf == NULL:
            raise MemoryError()
        self.cap = 4096
        self.len = 0
        self.proto = 2

    def __dealloc__(self):
        free(self.buf)

    def __len__(self):
        return self.len

    cdef int grow(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t ncap
        cdef char *nbuf
        if self.len + extra <= self.cap:
            return 0
        ncap = self.cap * 2
        while ncap < self.len + extra:
            ncap *= 2
        nbuf = <char *>realloc(self.buf, ncap)
        if nbuf == NULL:
            raise MemoryError()
        self.buf = nbuf
        self.cap = ncap
        return 0

    cdef int put(self, const char *s, Py_ssize_t n) except -1:
        self.grow(n)
        memcpy(self.buf + self.len, s, n)
        self.len += n
        return 0

    cdef int header(self, char kind, long long n) except -1:
        """kind, n in decimal, CRLF: every bulk and array reply starts so."""
        cdef char *p
        self.grow(24)
        p = self.buf + self.len
        p[0] = kind
        p += 1
        if n < 0:
            p[0] = b'-'
            p = put_uint(p + 1, <uint64_t>(-(n + 1)) + 1)
        else:
            p = put_uint(p, <uint64_t>n)
        p[0] = b'\r'
        p[1] = b'\n'
        self.len = (p + 2) - self.buf
        return 0

    cdef int line(self, char kind, s) except -1:
        cdef bytes b = s.encode() if isinstance(s, str) else bytes(s)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
        # a simple string or error cannot hold a line break: it would split the reply
        if memchr(PyBytes_AS_STRING(b), b'\r', n) != NULL or memchr(PyBytes_AS_STRING(b), b'\n', n) != NULL:
            b = b.replace(b"\r", b" ").replace(b"\n", b" ")
        self.grow(n + 3)
        self.buf[self.len] = kind
        memcpy(self.buf + self.len + 1, PyBytes_AS_STRING(b), n)
        self.buf[self.len + 1 + n] = b'\r'
        self.buf[self.len + 2 + n] = b'\n'
        self.len += n + 3
        return 0

    cpdef ok(self):
        self.put("+OK\r\n", 5)

    cpdef simple(self, s):
        self.line(b'+', s)

    cpdef error(self, s):
        """s is the whole message including its prefix, e.g. 'ERR syntax error'."""
        self.line(b'-', s)

    cpdef integer(self, long long n):
        self.header(b':', n)

    cpdef bulk(self, value):
        """A bulk string from bytes (str is UTF-8 encoded); None is the null reply."""
        cdef bytes b
        if value is None:
            self.null()
            return
        if type(value) is bytes:
            b = <bytes>value
        elif isinstance(value, str):
            b = value.encode()
        else:
            b = bytes(value)
        self.bulk_raw(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))

    cdef int bulk_raw(self, const char *p, Py_ssize_t n) except -1:
        """A bulk string of the n bytes at p."""
        self.header(b'$', n)
        self.grow(n + 2)
        memcpy(self.buf + self.len, p, n)
        self.buf[self.len + n] = b'\r'
        self.buf[self.len + n + 1] = b'\n'
        self.len += n + 2
        return 0

    cpdef null(self):
        if self.proto == 3:
            self.put("_\r\n", 3)
        else:
            self.put("$-1\r\n", 5)

    cpdef null_array(self):
        if self.proto == 3:
            self.put("_\r\n", 3)
        else:
            self.put("*-1\r\n", 5)

    cpdef array(self, long long n):
        self.header(b'*', n)

    cpdef map(self, long long n):
        if self.proto == 3:
            self.header(b'%', n)
        else:
            self.header(b'*', 2 * n)

    cpdef set(self, long long n):
        if self.proto == 3:
            self.header(b'~', n)
        else:
            self.header(b'*', n)

    cpdef boolean(self, bint v):
        if self.proto == 3:
            self.put("#t\r\n" if v else "#f\r\n", 4)
        else:
            self.put(":1\r\n" if v else ":0\r\n", 4)

    cpdef dbl(self, double v):
        cdef bytes text
        if isinf(v):
            text = b"inf" if v > 0 else b"-inf"
        elif isnan(v):
            text = b"nan"
        else:
            text = format_double(v)
        if self.proto == 3:
            self.line(b',', text)
        else:
            self.bulk(text)

    cpdef verbatim(self, text):
        """A verbatim text string (RESP3 `=`, format txt) such as INFO's; a bulk in RESP2."""
        cdef bytes b = text.encode() if isinstance(text, str) else bytes(text)
        if self.proto != 3:
            self.bulk(b)
            return
        self.header(b'=', PyBytes_GET_SIZE(b) + 4)
        self.put("txt:", 4)
        self.put(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
        self.put("\r\n", 2)

    cpdef bulks(self, list items):
        """An array of bulk strings (None items are nulls), e.g. MGET's reply."""
        self.header(b'*', len(items))
        for item in items:
            self.bulk(item)

    cpdef raw(self, const unsigned char[:] data):
        """Already-encoded reply bytes."""
        if data.shape[0]:
            self.put(<const char *>&data[0], data.shape[0])

    cpdef bytes take(self):
        """The encoded replies so far; the buffer starts over empty."""
        cdef bytes out = PyBytes_FromStringAndSize(self.buf, self.len)
        self.len = 0
        if self.cap > 1 << 20:
            # do not keep a huge buffer alive after one big reply
            free(self.buf)
            self.buf = <char *>malloc(4096)
            if self.buf == NULL:
                self.cap = 0
                raise MemoryError()
            self.cap = 4096
        return out


cdef extern from "<stdlib.h>" nogil:
    long double strtold(const char *s, char **end)

cdef extern from "<math.h>" nogil:
    bint isfinite_ld "isfinite"(long double x)
    bint isnan_ld "isnan"(long double x)


cdef int parse_ld(bytes s, long double *out) except -1:
    """Parse s as Redis' string2ld does (strtold over the whole value, no leading space, no
    NaN, no overflow or underflow). Returns 1 when valid, 0 when not."""
    cdef char tmp[5120]
    cdef char *end
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s)
    cdef long double v
    if n == 0 or n >= 5120:
        return 0
    if memchr(PyBytes_AS_STRING(s), 0, n) != NULL:
        return 0  # the whole value must be the number, NUL bytes included
    memcpy(tmp, PyBytes_AS_STRING(s), n)
    tmp[n] = 0
    if is_space(tmp[0]):
        return 0
    c_errno.errno = 0
    v = strtold(tmp, &end)
    if end[0] != 0 or isnan_ld(v):
        return 0
    if c_errno.errno == c_errno.ERANGE and (not isfinite_ld(v) or v == 0):
        return 0  # overflow or underflow while reading
    out[0] = v
    return 1


cdef bytes ld_text(long double v):
    """Redis' human format for long doubles: %.17Lf without trailing zeros."""
    cdef char tmp[5200]
    cdef int n = snprintf(tmp, sizeof(tmp), "%.17Lf", v)
    if n <= 0 or n >= <int>sizeof(tmp):
        raise OverflowError("value too large to format")
    if memchr(tmp, b'.', n) != NULL:
        while tmp[n - 1] == b'0':
            n -= 1
        if tmp[n - 1] == b'.':
            n -= 1
    if n == 2 and tmp[0] == b'-' and tmp[1] == b'0':
        return b"0"
    return PyBytes_FromStringAndSize(tmp, n)


def incr_float(bytes current, bytes increment):
    """INCRBYFLOAT's arithmetic in long double, exactly as Redis computes and prints it.

    Returns the new value's text; raises ValueError with Redis' message for a value or an
    increment that is not a float, or a result that is NaN or infinite."""
    cdef long double cur = 0, inc = 0, res
    if current is not None and not parse_ld(current, &cur):
        raise ValueError("ERR value is not a valid float")
    if not parse_ld(increment, &inc):
        raise ValueError("ERR value is not a valid float")
    res = cur + inc
    if not isfinite_ld(res):
        raise ValueError("ERR increment would produce NaN or Infinity")
    return ld_text(res)


cpdef bytes format_double(double v):
    """Shortest text that reads back as v (RESP3 double replies)."""
    r = repr(v)
    if r.endswith(".0"):
        r = r[:-2]
    return r.encode()
