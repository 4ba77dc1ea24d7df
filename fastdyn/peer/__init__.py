"""The internal peer protocol: binary frames on the peer port between cluster nodes.

`codec` (sans-IO frames), `messages` (kinds and payload layouts), `protocol` (one asyncio
connection), `pool` (one connection per peer, deadlines, reachability), `server` (the peer
port), `faults` (drop, delay or partition outgoing traffic, for fault tests), `memory` (a
dict-backed replica handler for tests, simulation and benchmarks). docs/peer.md describes it.
"""
