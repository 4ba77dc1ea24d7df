# cython: language_level=3
"""Redis glob patterns (KEYS, SCAN MATCH): `*`, `?`, `[abc]`, `[a-z]`, `[^x]`, `\\` escapes.

Python's fnmatch differs (it has no `\\` escape and uses `[!x]`), so the pattern is compiled here
with Redis' own reading rules (stringmatchlen in util.c): the same class boundaries, reversed
ranges allowed, an unclosed `[` running to the end of the pattern. Every token but `*` matches
one byte, so matching needs only one backtrack point (the last `*`) and stays linear-ish on
hostile patterns instead of Redis' exponential worst case.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport malloc, free
from libc.string cimport memset

cdef enum TokenKind:
    T_LITERAL = 0
    T_ANY = 1
    T_STAR = 2
    T_CLASS = 3


cdef struct Token:
    int kind
    unsigned char byte            # T_LITERAL
    unsigned char cls[32]         # T_CLASS: a 256-bit set


cdef inline void cls_add(unsigned char *cls, unsigned int c) noexcept:
    cls[c >> 3] |= <unsigned char>(1 << (c & 7))


cdef inline bint cls_has(const unsigned char *cls, unsigned int c) noexcept:
    return (cls[c >> 3] >> (c & 7)) & 1


cdef class GlobPattern:
    """A compiled Redis glob; match(key) says whether a key matches it."""
    cdef Token *tokens
    cdef Py_ssize_t ntokens
    cdef readonly bytes pattern
    cdef readonly bint match_all

    def __cinit__(self, bytes pattern):
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(pattern)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(pattern)
        cdef Py_ssize_t i = 0, k = 0
        cdef unsigned int lo, hi, c
        cdef bint neg
        cdef Token *t
        self.pattern = pattern
        self.tokens = <Token *>malloc((n + 1) * sizeof(Token))
        if self.tokens == NULL:
            raise MemoryError()
        while i < n:
            t = &self.tokens[k]
            c = p[i]
            if c == b'*':
                while i + 1 < n and p[i + 1] == b'*':
                    i += 1
                t.kind = T_STAR
            elif c == b'?':
                t.kind = T_ANY
            elif c == b'[':
                t.kind = T_CLASS
                memset(t.cls, 0, 32)
                i += 1
                neg = i < n and p[i] == b'^'
                if neg:
                    i += 1
                while True:
                    if i < n and p[i] == b'\\' and n - i >= 2:
                        i += 1
                        cls_add(t.cls, p[i])
                    elif i < n and p[i] == b']':
                        break
                    elif i >= n:
                        # unclosed class: it ends with the pattern
                        i -= 1
                        break
                    elif n - i >= 3 and p[i + 1] == b'-':
                        lo = p[i]
                        hi = p[i + 2]
                        if lo > hi:
                            lo, hi = hi, lo
                        while lo <= hi:
                            cls_add(t.cls, lo)
                            lo += 1
                        i += 2
                    else:
                        cls_add(t.cls, p[i])
                    i += 1
                if neg:
                    for c in range(32):
                        t.cls[c] = ~t.cls[c]
            elif c == b'\\' and n - i >= 2:
                i += 1
                t.kind = T_LITERAL
                t.byte = p[i]
            else:
                t.kind = T_LITERAL
                t.byte = <unsigned char>c
            k += 1
            i += 1
        self.ntokens = k
        self.match_all = k == 1 and self.tokens[0].kind == T_STAR

    def __dealloc__(self):
        free(self.tokens)

    cdef bint matches(self, const unsigned char *s, Py_ssize_t n) noexcept:
        cdef Py_ssize_t ti = 0, si = 0
        cdef Py_ssize_t star_t = -1, star_s = 0
        cdef Token *t
        cdef bint ok
        while si < n:
            if ti < self.ntokens:
                t = &self.tokens[ti]
                if t.kind == T_STAR:
                    star_t = ti
                    star_s = si
                    ti += 1
                    continue
                if t.kind == T_ANY:
                    ok = True
                elif t.kind == T_LITERAL:
                    ok = t.byte == s[si]
                else:
                    ok = cls_has(t.cls, s[si])
                if ok:
                    ti += 1
                    si += 1
                    continue
            if star_t < 0:
                return False
            # let the last `*` swallow one more byte and retry from there
            ti = star_t + 1
            star_s += 1
            si = star_s
        while ti < self.ntokens and self.tokens[ti].kind == T_STAR:
            ti += 1
        return ti == self.ntokens

    def match(self, bytes key):
        return self.matches(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))

    def filter(self, keys):
        """The keys (bytes) that match, in order."""
        cdef list out = []
        cdef bytes k
        if self.match_all:
            return list(keys)
        for k in keys:
            if self.matches(<const unsigned char *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k)):
                out.append(k)
        return out
