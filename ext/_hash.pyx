# cython: language_level=3
"""The key hash: XXH64 with seed 0 (ext/xxh64.h), for one key or a batch of keys.

Batches are a list/tuple of bytes (str is UTF-8 encoded) or a NumPy array of dtype ``S``;
NumPy ``S`` items drop trailing NUL bytes (NumPy's own rule), so keys that end in NUL must be
passed as a list.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_Check
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport uint64_t
from xxh64 cimport fd_xxh64, FD_KEY_SEED

import numpy as np
cimport numpy as cnp

cnp.import_array()

KEY_SEED = FD_KEY_SEED


cdef inline bytes _as_key(object key):
    if PyBytes_Check(key):
        return <bytes>key
    if PyUnicode_Check(key):
        return (<str>key).encode("utf-8")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a key must be bytes or str, not {type(key).__name__}")


def hash64(key, uint64_t seed=FD_KEY_SEED):
    """XXH64 of one key (bytes, bytearray, memoryview or str as UTF-8)."""
    cdef bytes b = _as_key(key)
    return fd_xxh64(PyBytes_AS_STRING(b), <size_t>PyBytes_GET_SIZE(b), seed)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _hash_fixed(const char *base, Py_ssize_t n, Py_ssize_t width, uint64_t seed,
                      uint64_t *out) noexcept nogil:
    cdef Py_ssize_t i, length
    cdef const char *item
    for i in range(n):
        item = base + i * width
        length = width
        while length > 0 and item[length - 1] == 0:
            length -= 1
        out[i] = fd_xxh64(item, <size_t>length, seed)


@cython.boundscheck(False)
@cython.wraparound(False)
def hash64_batch(keys, uint64_t seed=FD_KEY_SEED):
    """XXH64 of every key, as a NumPy uint64 array in input order."""
    cdef Py_ssize_t i, n
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] out
    cdef uint64_t[::1] view
    cdef const unsigned char[::1] raw
    cdef Py_ssize_t width
    cdef object key
    cdef bytes b
    if isinstance(keys, np.ndarray):
        if keys.dtype.kind == "S":
            flat = np.ascontiguousarray(keys).reshape(-1)
            n = flat.shape[0]
            width = flat.dtype.itemsize
            out = np.empty(n, dtype=np.uint64)
            if n == 0 or width == 0:
                out[:] = fd_xxh64(b"", 0, seed)
                return out
            raw = flat.view(np.uint8)
            view = out
            with nogil:
                _hash_fixed(<const char *>&raw[0], n, width, seed, &view[0])
            return out
        if keys.dtype.kind != "O":
            raise TypeError(f"a key array must have dtype S or object, not {keys.dtype}")
        keys = keys.reshape(-1).tolist()
    elif not isinstance(keys, (list, tuple)):
        keys = list(keys)
    n = len(keys)
    out = np.empty(n, dtype=np.uint64)
    view = out
    for i in range(n):
        key = keys[i]
        b = _as_key(key)
        view[i] = fd_xxh64(PyBytes_AS_STRING(b), <size_t>PyBytes_GET_SIZE(b), seed)
    return out
