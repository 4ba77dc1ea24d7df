"""The client-facing node: RESP over asyncio on uvloop.

cli.py (the `serve` subcommand) -> config.py (flags over TOML) -> server.py (the node: store,
coordinator, listener, timers, group commit) -> protocol.py (one connection) -> the Cython
codec (fastdyn._resp) and dispatcher (fastdyn._commands) -> commands/ (the command registry and
Redis semantics) -> the coordinator (fastdyn.cluster.coordinator). info.py builds INFO.
"""
