# cython: language_level=3
"""LCS: the longest common subsequence of two strings and its matching ranges, computed as
Redis' lcsCommand does (same table, same walk back, so the same ranges in the same order)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t
from libc.stdlib cimport free, malloc


def lcs(bytes a, bytes b, min_match_len=None):
    """(the common subsequence, [(a_start, a_end, b_start, b_end), ...]): the ranges of
    contiguous matches from the end of the strings backwards, those shorter than
    min_match_len left out; no ranges when min_match_len is None. The caller bounds the
    table, (len(a) + 1) * (len(b) + 1) 32-bit cells."""
    cdef Py_ssize_t alen = PyBytes_GET_SIZE(a), blen = PyBytes_GET_SIZE(b), w = blen + 1
    cdef const unsigned char *pa = <const unsigned char *>PyBytes_AS_STRING(a)
    cdef const unsigned char *pb = <const unsigned char *>PyBytes_AS_STRING(b)
    cdef Py_ssize_t i, j, k
    cdef Py_ssize_t a_start, a_end = 0, b_start = 0, b_end = 0
    cdef uint32_t up, left
    cdef uint32_t *t
    cdef char *po
    cdef bint emit, want_ranges = min_match_len is not None
    cdef long long min_len = min_match_len if want_ranges else 0
    if alen == 0 or blen == 0:
        return b"", []
    t = <uint32_t *>malloc((alen + 1) * w * sizeof(uint32_t))
    if t == NULL:
        raise MemoryError()
    try:
        # t[i * w + j]: the LCS length of a[:i] and b[:j]
        with nogil:
            for j in range(w):
                t[j] = 0
            for i in range(1, alen + 1):
                t[i * w] = 0
                for j in range(1, w):
                    if pa[i - 1] == pb[j - 1]:
                        t[i * w + j] = t[(i - 1) * w + j - 1] + 1
                    else:
                        up = t[(i - 1) * w + j]
                        left = t[i * w + j - 1]
                        t[i * w + j] = up if up > left else left
        k = t[alen * w + blen]
        out = PyBytes_FromStringAndSize(NULL, k)
        po = PyBytes_AS_STRING(out)
        ranges = []
        i, j = alen, blen
        a_start = alen  # alen: no range is open
        while i > 0 and j > 0:
            emit = False
            if pa[i - 1] == pb[j - 1]:
                po[k - 1] = pa[i - 1]
                if a_start == alen:
                    a_start = a_end = i - 1
                    b_start = b_end = j - 1
                elif a_start == i and b_start == j:
                    a_start -= 1
                    b_start -= 1
                else:
                    emit = True
                if a_start == 0 or b_start == 0:
                    emit = True
                k -= 1
                i -= 1
                j -= 1
            else:
                if t[(i - 1) * w + j] > t[i * w + j - 1]:
                    i -= 1
                else:
                    j -= 1
                if a_start != alen:
                    emit = True
            if emit:
                if want_ranges and a_end - a_start + 1 >= min_len:
                    ranges.append((a_start, a_end, b_start, b_end))
                a_start = alen
        return out, ranges
    finally:
        free(t)
