# cython: language_level=3
# C-level interface of the RESP codec, so the command dispatcher can cimport it and write
# replies without Python method lookups.

cdef class RequestParser:
    cdef char *buf
    cdef Py_ssize_t start
    cdef Py_ssize_t end
    cdef Py_ssize_t cap
    cdef list args            # arguments of the multibulk frame being parsed
    cdef long long mb_left    # arguments still missing from it (0 = at a frame boundary)
    cdef long long bulk_len   # length of the bulk being waited for (-1 = header not read yet)
    cdef Py_ssize_t args_bytes  # what the arguments in `args` count toward max_query
    cdef public long long queued_bytes  # what the connection holds for later (MULTI's queue)
    cdef public long long max_bulk
    cdef public long long max_query
    cdef public bint auth_required
    cdef public object error

    cdef int reserve(self, Py_ssize_t extra) except -1
    cdef int fail(self, msg) except -1
    cdef bint over_limit(self, Py_ssize_t extra) noexcept
    cdef int append(self, data) except -1
    cdef int charge(self, list args) except -1


cdef class ReplyWriter:
    cdef char *buf
    cdef Py_ssize_t len
    cdef Py_ssize_t cap
    cdef public int proto

    cdef int grow(self, Py_ssize_t extra) except -1
    cdef int put(self, const char *s, Py_ssize_t n) except -1
    cdef int header(self, char kind, long long n) except -1
    cdef int line(self, char kind, s) except -1
    cpdef ok(self)
    cpdef simple(self, s)
    cpdef error(self, s)
    cpdef integer(self, long long n)
    cpdef bulk(self, value)
    cdef int bulk_raw(self, const char *p, Py_ssize_t n) except -1
    cpdef null(self)
    cpdef null_array(self)
    cpdef array(self, long long n)
    cpdef map(self, long long n)
    cpdef set(self, long long n)
    cpdef boolean(self, bint v)
    cpdef dbl(self, double v)
    cpdef verbatim(self, text)
    cpdef bulks(self, list items)
    cpdef raw(self, const unsigned char[:] data)
    cpdef bytes take(self)
