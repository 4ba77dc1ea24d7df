"""The decision half of a replicated write (riak_kv's put_core): pure, no I/O.

The coordinator sends the write to its targets and feeds each outcome to a `PutCore`; the core
says when the write has succeeded (W acknowledgements, DW of them durable) or can no longer
succeed. It is a C class (ext/_quorum.pyx): every replicated write makes one.
"""
from fastdyn._quorum import FAILED, OK, PENDING, PutCore  # noqa: F401
