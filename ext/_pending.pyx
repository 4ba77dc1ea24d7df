# cython: language_level=3
"""The deferred result's class (fastdyn/pending.py): every quorum operation makes one and
completes it once, so its creation and callbacks are C-level."""
cimport cython


@cython.freelist(64)
cdef class Pending:
    """A result that completes later; callbacks run in completion order, once."""
    cdef list _callbacks
    cdef public bint done
    cdef public object result

    def __cinit__(self):
        self._callbacks = []
        self.done = False
        self.result = None

    def add_done_callback(self, fn) -> None:
        if self.done:
            fn(self.result)
        else:
            self._callbacks.append(fn)

    cpdef complete(self, result):
        """result is the operation's value, or an exception instance for a failure."""
        if self.done:
            return
        self.done = True
        self.result = result
        callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks:
            fn(result)
