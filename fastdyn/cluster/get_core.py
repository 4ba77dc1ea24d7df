"""The decision half of a replicated read (riak_kv's get_core): pure, no I/O.

`GetCore` answers a read at R replies with the merge of what they sent and names the replicas
that need read repair once every asked replica has answered. It is a C class
(ext/_quorum.pyx): every replicated read makes one.
"""
from fastdyn._quorum import GetCore  # noqa: F401
