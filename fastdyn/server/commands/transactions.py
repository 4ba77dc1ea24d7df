"""Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH (Redis' multi.c). The dispatcher queues
every other command while a connection is in MULTI."""
from fastdyn.errors import CommandError
from fastdyn.server.commands.registry import CommandGroup

transactions = CommandGroup("transactions")
command = transactions.command


@command("multi", 1, "loading stale fast", summary="Starts a transaction.", multi_control=True)
def cmd_multi(conn, args):
    if conn.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    conn.multi = []
    conn.multi_failed = False
    conn.out.ok()


@command("exec", 1, "loading stale", summary="Executes all commands in a transaction.",
         multi_control=True)
def cmd_exec(conn, args):
    if conn.multi is None:
        raise CommandError("ERR EXEC without MULTI")
    queued, failed = conn.multi, conn.multi_failed
    conn.multi, conn.multi_failed = None, False
    if failed:
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    conn.run_queued(queued)


@command("discard", 1, "loading stale fast", summary="Discards a transaction.",
         multi_control=True)
def cmd_discard(conn, args):
    if conn.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    conn.multi, conn.multi_failed = None, False
    conn.out.ok()


@command("watch", -2, "loading stale fast", (1, -1, 1),
         "Monitors changes to keys to determine the execution of a transaction.",
         multi_control=True)
def cmd_watch(conn, args):
    if conn.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    raise CommandError("ERR WATCH is not supported: fastdyn replicates without locks; use "
                       "SET NX/XX or a single MULTI block instead")


@command("unwatch", 1, "loading stale fast",
         summary="Forgets about watched keys of a transaction.")
def cmd_unwatch(conn, args):
    conn.out.ok()
