"""Every exception fastdyn raises on purpose, in one place."""


class FastdynError(Exception):
    """Base class of fastdyn's own errors."""


class StorageError(FastdynError):
    """The storage engine cannot do what was asked (I/O error, closed store, bad argument)."""


class StoreLocked(StorageError):
    """Another process holds the data directory's lock."""


class StorageCorruption(StorageError):
    """A segment or hint file holds data that fails its checks."""


class PersistFailed(StorageError):
    """The store cannot persist writes (disk full, file size limit, I/O error): it refuses
    writes until one succeeds again; reads keep working."""


class DurabilityLost(PersistFailed):
    """An fsync failed, so data the store wrote may be gone from the disk: it refuses every
    write until it is reopened (and recovery has read back what the disk really holds)."""


class ProtocolError(FastdynError):
    """A peer or client sent bytes that are not a valid frame; the connection must close."""


class QuorumNotReached(FastdynError):
    """Fewer replicas than required answered in time."""


class SiblingLimitExceeded(FastdynError):
    """A write would make an object hold more siblings than allowed."""


class ReplyError(FastdynError):
    """A server answered a request with an error reply (RESP `-ERR ...`, memcached `ERROR`)."""


class TargetUnavailable(FastdynError):
    """A load-test target cannot be reached or refuses the connection's setup (AUTH, HELLO)."""


class CommandError(FastdynError):
    """A client command the server refuses; str(exc) is the RESP error line without its '-',
    starting with Redis' prefix (e.g. 'ERR syntax error', 'NOAUTH Authentication required.')."""


class ListenError(FastdynError, OSError):
    """A node cannot bind its listening address (port in use, address not local)."""


class MerkleFormatError(ProtocolError, ValueError):
    """A serialised Merkle tree, request or reply is malformed or has another tree's shape."""


class HintStoreFull(FastdynError):
    """A fallback cannot keep another hint without passing the hint store's bound."""


class PeerError(FastdynError):
    """A request to a peer node did not get a normal answer."""

    def __init__(self, peer, reason: str):
        super().__init__(f"peer {peer}: {reason}")
        self.peer = peer
        self.reason = reason


class PeerUnreachable(PeerError):
    """The connection to the peer is down, failed, or the peer is marked unreachable."""


class PeerTimeout(PeerError):
    """The peer did not answer before the request's deadline."""


class PeerRequestFailed(PeerError):
    """The peer answered the request with an error response."""


class FaultRuleError(FastdynError, ValueError):
    """A fault-injection rule has a bad argument (negative delay, probability outside 0..1)."""


class ClockSkewTooLarge(FastdynError):
    """A timestamp received from elsewhere is further ahead of the local wall clock than the
    hybrid logical clock accepts; observing it would drag this node's clock into the future."""


class BadContext(FastdynError, ValueError):
    """A causal context sent by a client (DYN.PUT, DYN.DEL) is not one this store issued."""


class BadObject(StorageCorruption, ProtocolError):
    """The bytes of a stored or replicated object do not decode (bad tag, truncated, fields
    out of order or out of range)."""


class NotAnInteger(CommandError):
    """INCR and friends on a value that is not a 64-bit decimal integer."""

    def __init__(self, message: str = "ERR value is not an integer or out of range"):
        super().__init__(message)


class CounterOverflow(CommandError):
    """INCR and friends whose result would leave the signed 64-bit range."""

    def __init__(self, message: str = "ERR increment or decrement would overflow"):
        super().__init__(message)


class BadKey(FastdynError, ValueError):
    """A key that is empty or longer than the storage engine's limit (64 KiB)."""


def misconf(exc: PersistFailed) -> CommandError:
    """The reply to a write the store refuses because it cannot persist (Redis' MISCONF)."""
    return CommandError(f"MISCONF Errors writing to the data directory: {exc}")
