# cython: language_level=3
"""The deferred result's class (fastdyn/pending.py): every quorum operation makes one and
completes it once, so its creation and callbacks are C-level. A callback that is a
`Completion` (a C class of another extension, through fastdyn._pending.pxd) is called through
its C method `completed`, without a Python call."""
cimport cython


cdef class Completion:
    """The base of a C callback of Pending: `completed(result)` runs once it is there."""

    cdef int completed(self, object result) except -1:
        # abstract: each subclass (a reply slot, say) defines what a result does to it
        raise NotImplementedError(f"{type(self).__name__} does not define completed()")

    def __call__(self, result):
        self.completed(result)


@cython.freelist(64)
cdef class Pending:
    """A result that completes later; callbacks run in completion order, once."""
    # fields: see fastdyn._pending.pxd

    def __cinit__(self):
        self._callbacks = []
        self.done = False
        self.result = None

    cpdef add_done_callback(self, fn):
        if not self.done:
            self._callbacks.append(fn)
        elif isinstance(fn, Completion):
            (<Completion>fn).completed(self.result)
        else:
            fn(self.result)

    cpdef complete(self, result):
        """result is the operation's value, or an exception instance for a failure."""
        if self.done:
            return
        self.done = True
        self.result = result
        callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks:
            if isinstance(fn, Completion):
                (<Completion>fn).completed(result)
            else:
                fn(result)
