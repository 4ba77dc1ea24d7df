# cython: language_level=3
# The replica core's C-level interface: the coordinator (ext/_quorum.pyx) syncs its own copy
# of a plain write through ReplicaCore.merge_plain without a Python call.
from libc.stdint cimport uint64_t


cdef class ReplicaCore:
    cdef public object store
    cdef public object hlc
    cdef public uint64_t flush_epoch
    cdef public Py_ssize_t write_seq
    cdef readonly bint in_c

    cdef object merge_plain(self, bytes key, data)
