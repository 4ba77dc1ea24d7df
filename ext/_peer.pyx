# cython: language_level=3
"""The peer protocol's hot loops: splitting the byte stream into frames (header layout in
fastdyn/peer/codec.py) and per-key packing of message payloads (fastdyn/peer/messages.py).

The coordinator sends one batch of keys per peer per event-loop turn, so the per-key cost of
these loops is what a replicated operation pays on the wire; in Python they cost 0.13-0.8 us
per key, here a few tens of nanoseconds. Packing sizes the output first and fills one bytes
object; unpacking reads through the payload's buffer, returns keys as bytes and objects as
memoryview slices of the payload (no copy; an empty one as b""). Decoding frames here rather than with struct
halves the receive side's cost per frame.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromObject,
                            PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.sequence cimport PySequence_GetSlice
from libc.stdint cimport uint32_t
from libc.string cimport memcpy

from fastdyn.errors import ProtocolError

cdef size_t MAX_BLOB = 0xFFFFFFFF

VERSION = 1
HEADER_SIZE = 11
FLAG_RESPONSE = 0x01
FLAG_ERROR = 0x02
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024   # a batch of replica writes must fit; nodes raise it
cdef enum:
    _VERSION = 1
    _HEADER = 11
    _RESPONSE = 0x01
    _ERROR = 0x02

cdef unsigned char PUT_FLAGS = 0x01       # PUT_DURABLE
cdef unsigned char MAX_STATUS = 2         # OK, NOT_FOUND, ERROR


cdef inline void _put_u32(char* p, size_t v) noexcept:
    p[0] = <char>(v & 0xFF)
    p[1] = <char>((v >> 8) & 0xFF)
    p[2] = <char>((v >> 16) & 0xFF)
    p[3] = <char>((v >> 24) & 0xFF)


cdef inline size_t _get_u32(const unsigned char* p) noexcept:
    return <size_t>p[0] | (<size_t>p[1] << 8) | (<size_t>p[2] << 16) | (<size_t>p[3] << 24)


cdef inline bytes _b(object o):
    if PyBytes_CheckExact(o):
        return <bytes>o
    return PyBytes_FromObject(o)     # bytearray, memoryview; a str is a TypeError


cdef inline Py_ssize_t _blob_size(bytes b) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    if <size_t>n > MAX_BLOB:
        raise ValueError(f"a peer message field of {n} bytes exceeds 4 GiB")
    return 4 + n


cdef inline char* _put_blob(char* p, bytes b) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    _put_u32(p, <size_t>n)
    memcpy(p + 4, PyBytes_AS_STRING(b), <size_t>n)
    return p + 4 + n


# -- packing ---------------------------------------------------------------------------------
cdef bytes _pack_flat(list flat, Py_ssize_t width, int flags):
    """A batch of len(flat) // width items whose fields are the blobs of `flat` in order,
    after a flags byte when flags >= 0."""
    cdef Py_ssize_t total = 4 + (flags >= 0)
    cdef bytes b
    for b in flat:
        total += _blob_size(b)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(out)
    if flags >= 0:
        p[0] = <char>flags
        p += 1
    _put_u32(p, <size_t>(len(flat) // width))
    p += 4
    for b in flat:
        p = _put_blob(p, b)
    return out


def pack_keys(keys):
    return _pack_flat([_b(key) for key in keys], 1, -1)


def pack_puts(items, int flags=0):
    """items: sequence of (key, object bytes)."""
    if flags & ~PUT_FLAGS or flags < 0:
        raise ValueError(f"unknown REPLICA_PUT flags {flags:#x}")
    cdef list flat = []
    for key, obj in items:
        flat.append(_b(key))
        flat.append(_b(obj))
    return _pack_flat(flat, 2, flags)


def pack_hints(items):
    """items: sequence of (intended owner node name, key, object bytes)."""
    cdef list flat = []
    for owner, key, obj in items:
        flat.append((<str?>owner).encode())
        flat.append(_b(key))
        flat.append(_b(obj))
    return _pack_flat(flat, 3, -1)


def pack_results(results):
    """results: sequence of (status, blob): the object, b"" or an error message."""
    cdef list flat = []
    cdef list statuses = []
    cdef Py_ssize_t total = 4, i
    cdef bytes b
    cdef int s
    for status, blob in results:
        s = status
        if s < 0 or s > MAX_STATUS:
            raise ValueError(f"unknown result status {s}")
        b = _b(blob)
        total += 1 + _blob_size(b)
        statuses.append(s)
        flat.append(b)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(out)
    _put_u32(p, <size_t>len(flat))
    p += 4
    for i in range(len(flat)):
        p[0] = <char><int>statuses[i]
        p = _put_blob(p + 1, <bytes>flat[i])
    return out


# -- unpacking -------------------------------------------------------------------------------
cdef class _Cursor:
    """Reads a payload's fields in order, each bounds-checked against its end."""
    cdef Py_buffer buf
    cdef const unsigned char* base
    cdef Py_ssize_t pos, end
    cdef object view          # memoryview of the payload, for zero-copy object slices

    def __cinit__(self, payload):
        PyObject_GetBuffer(payload, &self.buf, PyBUF_SIMPLE)
        self.base = <const unsigned char*>self.buf.buf
        self.end = self.buf.len
        self.pos = 0
        self.view = payload if type(payload) is memoryview else None

    def __dealloc__(self):
        PyBuffer_Release(&self.buf)

    cdef inline Py_ssize_t u32(self, str what) except -1:
        if self.end - self.pos < 4:
            raise ProtocolError(f"peer message truncated in {what}")
        cdef Py_ssize_t v = <Py_ssize_t>_get_u32(self.base + self.pos)
        self.pos += 4
        return v

    cdef inline Py_ssize_t blob(self, str what) except -1:
        """Skips over the blob at the cursor; returns its start (its end is self.pos)."""
        cdef Py_ssize_t n = self.u32(what)
        cdef Py_ssize_t start = self.pos
        if n > self.end - start:
            raise ProtocolError(f"peer message truncated in {what}")
        self.pos = start + n
        return start

    cdef inline bytes blob_bytes(self, str what):
        cdef Py_ssize_t start = self.blob(what)
        return PyBytes_FromStringAndSize(<const char*>self.base + start, self.pos - start)

    cdef inline object blob_view(self, str what):
        cdef Py_ssize_t start = self.blob(what)
        if start == self.pos:
            return b""           # a write's acknowledgement: no view to make
        if self.view is None:
            self.view = memoryview(self.buf.obj)
        return PySequence_GetSlice(self.view, start, self.pos)

    cdef inline int done(self) except -1:
        if self.pos != self.end:
            raise ProtocolError(f"peer message has {self.end - self.pos} unexpected trailing "
                                f"bytes")
        return 0


def unpack_keys(payload):
    cdef _Cursor c = _Cursor(payload)
    cdef Py_ssize_t i, n = c.u32("batch count")
    cdef list keys = []
    for i in range(n):
        keys.append(c.blob_bytes("key"))
    c.done()
    return keys


def unpack_puts(payload):
    """(flags, [(key bytes, object memoryview), ...])."""
    cdef _Cursor c = _Cursor(payload)
    if c.end < 1:
        raise ProtocolError("peer message truncated in put flags")
    cdef unsigned char flags = c.base[0]
    if flags & ~PUT_FLAGS:
        raise ProtocolError(f"peer REPLICA_PUT has unknown flags {flags:#04x}")
    c.pos = 1
    cdef Py_ssize_t i, n = c.u32("batch count")
    cdef list items = []
    for i in range(n):
        key = c.blob_bytes("key")
        items.append((key, c.blob_view("object")))
    c.done()
    return flags, items


def unpack_hints(payload):
    """[(owner str, key bytes, object memoryview), ...]."""
    cdef _Cursor c = _Cursor(payload)
    cdef Py_ssize_t i, n = c.u32("batch count")
    cdef list items = []
    for i in range(n):
        raw = c.blob_bytes("hint owner")
        try:
            owner = (<bytes>raw).decode()
        except UnicodeDecodeError:
            raise ProtocolError("peer hint owner is not UTF-8") from None
        key = c.blob_bytes("key")
        items.append((owner, key, c.blob_view("object")))
    c.done()
    return items


def unpack_results(payload):
    """[(status, memoryview), ...]; an unknown status is a ProtocolError."""
    cdef _Cursor c = _Cursor(payload)
    cdef Py_ssize_t i, n = c.u32("batch count")
    cdef list results = []
    cdef unsigned char status
    for i in range(n):
        if c.end - c.pos < 5:
            raise ProtocolError("peer message truncated in result")
        status = c.base[c.pos]
        if status > MAX_STATUS:
            raise ProtocolError(f"peer result has unknown status {status}")
        c.pos += 1
        results.append((status, c.blob_view("result")))
    c.done()
    return results


# -- frames ----------------------------------------------------------------------------------
@cython.freelist(256)
cdef class Frame:
    """One decoded frame. `payload` is a memoryview into the received bytes (no copy), or b""
    when empty."""
    cdef readonly unsigned char kind, flags
    cdef readonly uint32_t req_id
    cdef readonly object payload

    def __init__(self, unsigned char kind, unsigned char flags, uint32_t req_id, payload):
        self.kind = kind
        self.flags = flags
        self.req_id = req_id
        self.payload = payload

    @property
    def is_response(self):
        return bool(self.flags & _RESPONSE)

    @property
    def is_error(self):
        return bool(self.flags & _ERROR)

    def __repr__(self):
        head = bytes(self.payload[:32])
        more = "..." if len(self.payload) > 32 else ""
        return (f"Frame(kind={self.kind}, flags={self.flags:#x}, req_id={self.req_id}, "
                f"payload={head!r}{more})")


cdef object _header_error(size_t version, size_t flags, size_t length, size_t max_payload):
    """The ProtocolError for a bad header, or None when it is valid."""
    if version != _VERSION:
        return ProtocolError(f"peer frame version {version} is not supported (this node "
                             f"speaks {_VERSION})")
    if flags & ~(<size_t>(_RESPONSE | _ERROR)):
        return ProtocolError(f"peer frame has unknown flags {flags:#04x}")
    if flags == _ERROR:
        return ProtocolError("peer frame has the error flag without the response flag")
    if length > max_payload:
        return ProtocolError(f"peer frame payload of {length} bytes exceeds the limit of "
                             f"{max_payload}")
    return None


@cython.final
cdef class FrameDecoder:
    """Splits a byte stream into frames. After a ProtocolError the stream is unusable: every
    later feed raises again (the connection must close)."""
    cdef readonly size_t max_payload
    cdef list _chunks           # received bytes not yet parsed
    cdef Py_ssize_t _have       # their total length
    cdef Py_ssize_t _need       # bytes needed before parsing can make progress
    cdef object _error

    def __init__(self, max_payload=DEFAULT_MAX_PAYLOAD):
        if not 0 <= max_payload <= MAX_BLOB:
            raise ValueError(f"max_payload must be within 0..{MAX_BLOB}, got {max_payload}")
        self.max_payload = max_payload
        self._chunks = []
        self._have = 0
        self._need = _HEADER
        self._error = None

    @property
    def buffered(self):
        """Bytes received but not yet returned as frames."""
        return self._have

    def feed(self, data):
        if self._error is not None:
            raise self._error
        if not data:
            return []
        if not PyBytes_CheckExact(data):
            data = PyBytes_FromObject(data)   # frames keep views into it: it must not change
        cdef bytes b = <bytes>data
        if self._chunks:
            self._chunks.append(b)
            self._have += PyBytes_GET_SIZE(b)
            if self._have < self._need:
                return []
            b = b"".join(self._chunks)
            self._chunks = []
        elif PyBytes_GET_SIZE(b) < self._need:
            self._chunks.append(b)
            self._have = PyBytes_GET_SIZE(b)
            return []
        return self._parse(b)

    cdef list _parse(self, bytes data):
        cdef list frames = []
        cdef const unsigned char* base = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(data), pos = 0, stop, need = _HEADER
        cdef size_t length
        cdef const unsigned char* h
        cdef Frame frame
        cdef object view = None
        while end - pos >= _HEADER:
            h = base + pos
            length = _get_u32(h)
            if h[4] != _VERSION or h[6] & ~_RESPONSE or length > self.max_payload:
                error = _header_error(h[4], h[6], length, self.max_payload)
                if error is not None:
                    self._error = error
                    self._chunks = []
                    self._have = 0
                    raise error
            stop = pos + _HEADER + <Py_ssize_t>length
            if stop > end:
                need = _HEADER + <Py_ssize_t>length
                break
            frame = Frame.__new__(Frame)
            frame.kind = h[5]
            frame.flags = h[6]
            frame.req_id = <uint32_t>_get_u32(h + 7)
            if length == 0:
                frame.payload = b""
            else:
                if view is None:
                    view = memoryview(data)
                frame.payload = PySequence_GetSlice(view, pos + _HEADER, stop)
            frames.append(frame)
            pos = stop
        if pos < end:
            rest = data[pos:]
            self._chunks = [rest]
            self._have = end - pos
        else:
            self._have = 0
        self._need = need
        return frames


@cython.final
cdef class FrameEncoder:
    """Appends frames into one buffer; `take()` hands the whole batch over for one write."""
    cdef bytearray _buf

    def __init__(self):
        self._buf = bytearray()

    def __len__(self):
        return PyByteArray_GET_SIZE(self._buf)

    def add(self, unsigned char kind, unsigned char flags, uint32_t req_id, payload=b""):
        cdef Py_buffer view
        cdef bint have_view = not PyBytes_CheckExact(payload)
        cdef const char* src
        cdef Py_ssize_t n, size
        cdef char* dst
        if have_view:
            PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
            src = <const char*>view.buf
            n = view.len
        else:
            src = PyBytes_AS_STRING(payload)
            n = PyBytes_GET_SIZE(payload)
        try:
            if <size_t>n > MAX_BLOB:
                raise ValueError(f"a peer frame payload of {n} bytes exceeds 4 GiB")
            size = PyByteArray_GET_SIZE(self._buf)
            PyByteArray_Resize(self._buf, size + _HEADER + n)   # over-allocates as it grows
            dst = PyByteArray_AS_STRING(self._buf) + size
            _put_u32(dst, <size_t>n)
            dst[4] = <char>_VERSION
            dst[5] = <char>kind
            dst[6] = <char>flags
            _put_u32(dst + 7, req_id)
            memcpy(dst + _HEADER, src, <size_t>n)
        finally:
            if have_view:
                PyBuffer_Release(&view)

    def take(self):
        """The encoded frames so far (the caller owns the buffer); the encoder starts empty."""
        buf = self._buf
        self._buf = bytearray()
        return buf
