"""The Redis command set fastdyn serves: arity, options, semantics and error texts of Redis 7.

One module per family, as Redis splits its sources: connection and server administration,
the keyspace and expiry, strings and counters, bit operations, transactions, and Dynamo's DYN.* commands. Each module
declares its commands as CommandSpec records in a CommandGroup; importing the package joins
them into REGISTRY, which the node hands to the dispatcher (fastdyn._commands.configure).
"""
from fastdyn.server.commands import bits, connection, dynamo, keys, strings, transactions
from fastdyn.server.commands.registry import Registry

REGISTRY = Registry([connection.connection, connection.server, keys.generic, strings.string,
                     bits.bitmap, transactions.transactions, dynamo.dynamo])
