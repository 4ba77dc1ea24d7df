"""The storage engine: a Bitcask-style log-structured hash store with a C keydir.

`Store` is the compiled class from `fastdyn._logstore` (see its docstrings for the API and the
durability guarantee of each sync policy); `fastdyn.open(path)` returns one.
"""
from fastdyn._logstore import Store, crc32c

__all__ = ["Store", "crc32c"]
