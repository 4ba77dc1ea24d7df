# cython: language_level=3
# C-level interface of the deferred result, so a C class can be a Pending's completion and be
# called through a C method instead of a Python call.

cdef class Completion:
    cdef int completed(self, object result) except -1


cdef class Pending:
    cdef list _callbacks
    cdef public bint done
    cdef public object result

    cpdef add_done_callback(self, fn)
    cpdef complete(self, result)
