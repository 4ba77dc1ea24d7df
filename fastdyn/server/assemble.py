"""Build a node from its configuration: bind, open the store, build the coordinator.

The order matters: the listening sockets are bound first, so a busy port fails before the data
directory is created or locked. A failure later closes whatever was opened, so a process can
build several nodes (tests do) and a refused one leaves nothing behind.
"""
import os
import socket

from fastdyn.cluster.coordinator import LocalCoordinator
from fastdyn.errors import ListenError
from fastdyn.server.server import BACKLOG, Node


def assemble(config) -> Node:
    """The node `config` describes, its sockets bound (connections wait in the backlog until
    Node.serve()); raises ListenError or StorageError with nothing left open."""
    from fastdyn.storage import Store

    sockets = listen_sockets(config.host, config.port)
    peer_sockets = []
    store = None
    try:
        if config.seeds:
            peer_sockets = listen_sockets(config.host, config.peer_port)
        os.makedirs(config.data_dir, exist_ok=True)
        # --sync always: the node fsyncs (group commit), not the store on every write.  A
        # cluster member stores objects: a value plus its version, or several siblings.
        store = Store(config.data_dir, sync="never" if config.sync == "always" else config.sync,
                      sync_interval_ms=config.sync_interval_ms,
                      max_value_bytes=config.max_bulk_bytes if config.seeds
                      else config.max_value_bytes,
                      # a member's expired values stay until anti-entropy lets them go
                      expire_hold_ms=1 if config.seeds and config.anti_entropy_interval_ms
                      else 0)
        cluster, coordinator = build_coordinator(config, store)
    except BaseException:
        if store is not None:
            store.close()
        for sock in sockets + peer_sockets:
            sock.close()
        raise
    return Node(config, store, coordinator, cluster=cluster, sockets=sockets,
                peer_sockets=peer_sockets)


def build_coordinator(config, store):
    """(cluster, coordinator): the cluster runtime and its quorum coordinator for a member
    (`config.seeds`), else (None, a LocalCoordinator)."""
    from fastdyn.cluster.runtime import Cluster, check_single_node_format

    if config.seeds:
        cluster = Cluster(config, store)
        return cluster, cluster.coordinator
    check_single_node_format(config.data_dir)
    return None, LocalCoordinator(store, config.n, config.r, config.w, config.name)


def listen_sockets(host, port):
    """Listening sockets for every address `host` resolves to, as loop.create_server would
    bind them; raises ListenError with nothing left open."""
    sockets = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, type_, proto, _, address in dict.fromkeys(infos):  # without repeats
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except BaseException as exc:
        for sock in sockets:
            sock.close()
        if isinstance(exc, OSError):
            raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        raise
    return sockets
