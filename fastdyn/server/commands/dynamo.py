"""Dynamo's own commands: causal reads and writes with contexts, the ring and the members.

DYN.GET key [R n]                                  -> [context, [value, ...]]
DYN.PUT key context value [W n] [DW n] [TTL s]     -> new context
DYN.DEL key context [W n]                          -> OK
DYN.RING                                           -> [[partition, [node, ...]], ...]
DYN.MEMBERS                                        -> [[name, address, status, partitions]...]
DYN.JOIN host:peer-port                            -> OK (this node joins that seed's cluster)
DYN.LEAVE [node [FORCE]]                           -> OK (the node hands off, then exits;
                                                      FORCE: a dead node, removed at once)
DYN.ANTIENTROPY [NOW|REBUILD]                      -> [[partition, root, age], ...] for the
                                                      partitions this node replicates (root:
                                                      hex, age: seconds since the last complete
                                                      exchange, -1 never); NOW: a round at once;
                                                      REBUILD: the trees again from the store
DYN.FAULT PARTITION|DELAY|DROP|HEAL|CLOCK ...      -> OK (only with --fault-injection yes)

A single node (no --seeds) answers them too, as a cluster of one; its context is always empty
because a single node keeps no versions.
"""
from fastdyn.errors import CommandError
from fastdyn.server.commands.registry import (ERR_SYNTAX, CommandGroup, int_arg, ok,
                                              reply_result)

dynamo = CommandGroup("dynamo")
command = dynamo.command

ONE_KEY = (1, 1, 1)


def _options(args, allowed):
    """Trailing NAME value pairs (case-insensitive) -> {name: int}."""
    out = {}
    if len(args) % 2:
        raise CommandError(ERR_SYNTAX)
    for i in range(0, len(args), 2):
        name = args[i].lower().decode("ascii", "replace")
        if name not in allowed or name in out:
            raise CommandError(ERR_SYNTAX)
        out[name] = int_arg(args[i + 1])
        if out[name] < (0 if name in ("dw", "ttl") else 1):
            raise CommandError(f"ERR {name.upper()} must be positive")
    return out


def _cluster_only(conn, what):
    coord = conn.coord
    if not hasattr(coord, "dyn_get"):
        raise CommandError(f"ERR {what} needs a cluster member (start the node with --seeds)")
    return coord


def _quorum_arg(conn, name, value):
    n = conn.coord.replication()["n_effective"]
    if value is not None and value > n:
        raise CommandError(f"ERR {name} {value} exceeds the {n} replicas of this cluster")
    return value


@command("dyn.get", -2, "readonly", ONE_KEY,
         "Returns every sibling of a key and the context to write back with.")
def cmd_dyn_get(conn, args):
    opts = _options(args[2:], ("r",))
    coord = _cluster_only(conn, "DYN.GET")
    r = _quorum_arg(conn, "R", opts.get("r"))

    def encode(out, result):
        context, values = result
        out.array(2)
        out.bulk(context)
        out.bulks(values)

    reply_result(conn, coord.dyn_get(args[1], r), encode)


@command("dyn.put", -4, "write", ONE_KEY,
         "Writes a value in the causal context of an earlier DYN.GET or DYN.PUT.")
def cmd_dyn_put(conn, args):
    opts = _options(args[4:], ("w", "dw", "ttl"))
    coord = _cluster_only(conn, "DYN.PUT")
    w = _quorum_arg(conn, "W", opts.get("w"))
    dw = _quorum_arg(conn, "DW", opts.get("dw"))
    reply_result(conn, coord.dyn_put(args[1], args[2], args[3], w=w, dw=dw,
                                     ttl_ms=opts.get("ttl", 0) * 1000),
                 lambda out, context: out.bulk(context))


@command("dyn.del", -3, "write", ONE_KEY,
         "Deletes the versions of a key that a context has seen.")
def cmd_dyn_del(conn, args):
    opts = _options(args[3:], ("w",))
    coord = _cluster_only(conn, "DYN.DEL")
    w = _quorum_arg(conn, "W", opts.get("w"))
    reply_result(conn, coord.dyn_put(args[1], args[2], b"", w=w, tombstone=True), ok)


@command("dyn.ring", 1, "readonly", summary="Returns every partition's preference list.")
def cmd_dyn_ring(conn, args):
    members = conn.server.cluster.members if conn.server.cluster is not None else None
    ring = members.ring if members is not None else None
    out = conn.out
    if ring is None:
        out.array(1)
        out.array(2)
        out.integer(0)
        out.bulks([conn.server.config.name.encode()])
        return
    n = conn.coord.replication()["n_effective"]
    out.array(ring.partition_count)
    for p in range(ring.partition_count):
        out.array(2)
        out.integer(p)
        out.bulks([name.encode() for name in ring.preference_list(p, n)])


@command("dyn.members", 1, "readonly",
         summary="Returns each member's name, address, status and partitions owned.")
def cmd_dyn_members(conn, args):
    node = conn.server
    if node.cluster is not None:
        members = node.cluster.members_view()
    else:
        cfg = node.config
        members = [{"name": cfg.name, "address": f"{cfg.advertise}:{cfg.peer_port}",
                    "status": "up", "partitions": cfg.partitions}]
    out = conn.out
    out.array(len(members))
    for m in members:
        out.array(8)
        for field in ("name", "address", "status"):
            out.bulk(field.encode())
            out.bulk(m[field].encode())
        out.bulk(b"partitions")
        out.integer(m["partitions"])


def _member_runtime(conn, what):
    cluster = conn.server.cluster
    if cluster is None:
        raise CommandError(f"ERR {what} needs a cluster member: start this node with --seeds "
                           f"(its own peer address is enough to make it a cluster of one)")
    return cluster


def _change(fn, arg):
    """A membership change; a refusal is the client's error."""
    try:
        fn(arg)
    except ValueError as exc:
        raise CommandError(f"ERR {exc}") from None


@command("dyn.join", 2, "admin",
         summary="Makes this node join the cluster of a seed (host:peer-port); it receives its "
                 "partitions, then serves them.")
def cmd_dyn_join(conn, args):
    _change(_member_runtime(conn, "DYN.JOIN").join, args[1].decode("utf-8", "replace"))
    conn.out.ok()


@command("dyn.leave", -1, "admin",
         summary="Makes a member (default this node) hand its partitions off and leave the "
                 "cluster; it exits when done. FORCE removes a dead member without a handoff.")
def cmd_dyn_leave(conn, args):
    force = len(args) == 3 and args[2].lower() == b"force"
    if len(args) > 3 or (len(args) == 3 and not force):
        raise CommandError(ERR_SYNTAX)
    cluster = _member_runtime(conn, "DYN.LEAVE")
    name = args[1].decode("utf-8", "replace") if len(args) >= 2 else None
    _change(lambda arg: cluster.leave(arg, force=force), name)
    conn.out.ok()


@command("dyn.antientropy", -1, "admin",
         summary="Lists this node's Merkle tree roots and last exchanges per partition; NOW "
                 "starts an anti-entropy round at once; REBUILD rebuilds the trees from the "
                 "store.")
def cmd_dyn_antientropy(conn, args):
    ae = _member_runtime(conn, "DYN.ANTIENTROPY").anti_entropy
    if ae is None:
        raise CommandError("ERR anti-entropy is off on this node (--anti-entropy-interval-ms 0)")
    if len(args) == 2 and args[1].lower() in (b"now", b"rebuild"):
        if args[1].lower() == b"now":
            ae.wake()
        else:
            ae.rebuild_trees()
        conn.out.ok()
        return
    if len(args) != 1:
        raise CommandError(ERR_SYNTAX)
    if not ae.trees.ready:
        raise CommandError("ERR the Merkle trees are still being rebuilt")
    rows = ae.partition_status()
    out = conn.out
    out.array(len(rows))
    for partition, root, age in rows:
        out.array(3)
        out.integer(partition)
        out.bulk(b"%016x" % root)
        out.bulk(str(age).encode())


@command("dyn.fault", -2, "admin",
         summary="Drops, delays or cuts this node's traffic to a peer, or shifts its clock "
                 "(testing only).")
def cmd_dyn_fault(conn, args):
    node = conn.server
    if node.cluster is None or not node.config.fault_injection:
        raise CommandError("ERR fault injection is off (start the node with "
                           "--fault-injection yes and --seeds)")
    faults = node.cluster.faults
    sub = args[1].lower()
    try:
        if sub == b"partition" and len(args) == 3:
            faults.partition(args[2].decode())
        elif sub == b"delay" and len(args) == 4:
            faults.delay(args[2].decode(), float(args[3]))
        elif sub == b"drop" and len(args) == 4:
            faults.drop(args[2].decode(), float(args[3]))
        elif sub == b"clock" and len(args) == 3:
            node.cluster.hlc.skew_us = int(float(args[2]) * 1000)
        elif sub == b"heal" and len(args) <= 3:
            faults.heal(args[2].decode() if len(args) == 3 else None)
        else:
            raise CommandError(ERR_SYNTAX)
    except ValueError as exc:
        raise CommandError(f"ERR {exc}") from None
    conn.out.ok()
