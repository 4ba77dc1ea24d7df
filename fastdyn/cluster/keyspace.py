"""Listing the cluster's keys: SCAN, KEYS and DBSIZE over every member, without duplicates.

Every key has a fixed place in one order, its 64-bit ring hash, and a SCAN cursor is a position
in that order: the next hash to return. For one SCAN call every reachable member answers its
`count` smallest live keys at or after the cursor (`live_keys_from`); the union, sorted by hash,
gives the call's `count` keys (each key once, however many replicas hold it) and the cursor
after the last of them. Nothing is kept between calls, so a member that fails during a scan
costs nothing while every key still has a reachable replica: a SCAN, KEYS or DBSIZE with N or
more members unreachable (some key may have no replica left to answer) is refused with an
error rather than answered short.

Each call walks every member's keydir once, in C, and reads the objects of only the keys it
returns (and of dead keys among them): a page costs about 2-3 ms per 100,000 keys a member
holds, plus its own keys. KEYS and DBSIZE read every key, as KEYS does in Redis.
"""
from fastdyn.cluster import object as vo
from fastdyn.errors import BadObject

END = 1 << 64      # past every hash: no cursor reaches it


def live_keys_from(store, start: int, limit: int, now_ms: int, flush_epoch: int):
    """The `limit` live keys of this store with the smallest hashes >= start, as sorted
    (hash, key) pairs, plus every further key sharing the last one's hash (a cursor cannot
    split them). The store picks the keys by hash in C (`Store.keys_by_hash`); only those are
    read to see whether they are live, and more are asked for while tombstones, expired or
    flushed keys leave the page short."""
    chosen = []
    while True:
        want = max(limit - len(chosen), 0) + limit // 4 + 8    # room for a few dead keys
        more, pairs = store.keys_by_hash(start, want)
        for h, key in pairs:
            data = store.get(key)
            try:
                if data is None or vo.lww_winner(vo.decode(data), now_ms, flush_epoch) is None:
                    continue
            except BadObject:
                continue
            chosen.append((h, key))
        if not more or len(chosen) >= limit or not pairs:
            break
        start = pairs[-1][0] + 1        # the store gave every key of its last hash
        if start >= END:
            break
    if len(chosen) > limit:
        last = chosen[limit - 1][0]
        chosen = [pair for pair in chosen if pair[0] <= last]
    return chosen


def merge_pages(pages, count: int, exhausted: bool):
    """One SCAN answer from every member's page: (next cursor, keys). `exhausted`: no member
    had more than it returned."""
    union = sorted(set(pair for page in pages for pair in page))
    if len(union) <= count:
        return (0 if exhausted else _after(union)), [k for _, k in union]
    last = union[count - 1][0]
    taken = [pair for pair in union if pair[0] <= last]
    return _after(taken), [k for _, k in taken]


def _after(pairs) -> int:
    if not pairs:
        return 0
    nxt = pairs[-1][0] + 1
    return 0 if nxt >= END else nxt
