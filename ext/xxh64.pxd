# cython: language_level=3
# C declarations of ext/xxh64.h, shared by the extensions that hash keys.
from libc.stdint cimport uint64_t

cdef extern from "xxh64.h" nogil:
    uint64_t FD_KEY_SEED
    uint64_t fd_xxh64(const void *data, size_t length, uint64_t seed)
    uint64_t fd_mix64(uint64_t x)
