"""Merkle-tree anti-entropy between replicas (Dynamo §4.7; issue 6).

Modules, bottom up (this package imports nothing at load, so `kv` starts fast):
    errors     AntiEntropyError, InvalidTree, InvalidMessage, PeerFailed
    merkle     MerkleTree (additive leaves over key-hash segments), Descent (sans-I/O)
    tree_file  DIR/aae/trees and its CLEAN mark
    keyindex   KeyIndex: which keys each segment holds (in memory)
    trees      Trees: one tree per partition, fed by ReplicaStore.observe, rebuilt in the
               background when missing or stale
    codec      the /internal/v1/aae/ bodies (msgpack, validated)
    reconcile  which keys of differing segments move, and which way (pure)
    responder  Responder: the answering side of an exchange
    exchange   Exchange: the initiating side (descent, keys, repair through merge_many)
    ratelimit  TokenBucket (pure)
    scheduler  Scheduler: periodic, rate-limited exchanges with every other replica
    service    AntiEntropy: what the node wires in (kvstore/node.py)
    api        the HTTP routes (internal and /admin/v1/aae)
    cli        `kv aae status|exchange` (register(subcommands))
"""
