# cython: language_level=3
# C declarations of ext/_client_wire.h (RESP and memcached reply scanning), shared by the client
# codec and the load generator.
from libc.stdint cimport int64_t

cdef extern from "_client_wire.h":
    int FD_REPLY_OK
    int FD_REPLY_ERROR
    int FD_REPLY_NIL
    int FD_REPLY_PUSH
    const char *fd_resp_skip(const char *p, const char *end, int depth, int *kind, int *bad) noexcept nogil
    const char *fd_mc_skip(const char *p, const char *end, int *kind, int *bad) noexcept nogil
    int fd_resp_first_string(const char *p, const char *end, const char **s, int64_t *length) noexcept nogil
    const char *fd_read_int_line(const char *p, const char *end, int64_t *out, int *bad) noexcept nogil
    int64_t fd_mc_value_bytes(const char *line, int64_t length) noexcept nogil
