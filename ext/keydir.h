/* The keydir: Bitcask's in-memory index, key -> (segment, offset, size, expiry), in C.
 *
 * Layout, chosen for a small per-key cost (about 26 bytes of entry + 10..15 bytes of slot):
 *  - entries live back to back in one arena: a 26-byte packed header followed by the key;
 *  - the table is an array of 64-bit slots, open addressing with linear probing; a slot holds
 *    (arena offset + 1) << 24 | 24 low bits of the key's hash, 0 = empty, so most mismatches
 *    are rejected without touching the arena;
 *  - a key's home slot is (hash * capacity) >> 64 ("fastrange"), which is monotonic in the
 *    hash: slot order is hash order.  With no wrap-around (an overflow area follows the
 *    `cap` home slots) and backward-shift deletion, every key sits in the run that starts at
 *    its home.  That gives SCAN a cursor that is a hash value, valid across resizes.
 *  - capacity is not a power of two: the table grows by 1.5x at load 0.8, so the load stays
 *    between 0.53 and 0.8.
 */
#ifndef FASTDYN_KEYDIR_H
#define FASTDYN_KEYDIR_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define KD_DEAD 0xFFFFFFFFu /* entry.seg of a removed entry */
#define KD_TAG_BITS 24
#define KD_TAG_MASK ((1ull << KD_TAG_BITS) - 1)

#pragma pack(push, 1)
typedef struct {
    uint32_t seg;     /* segment slot in the store's table; KD_DEAD once removed */
    uint32_t off;     /* record offset in the segment */
    uint32_t size;    /* whole record size: header + key + value */
    uint64_t expiry;  /* absolute Unix time in ms, 0 = none */
    uint16_t klen_m1; /* key length - 1 (keys are 1 .. 65536 bytes) */
    uint32_t digest;  /* the value's anti-entropy digest (Store.enable_trees); 0 = not known */
    char key[];
} kd_entry;
#pragma pack(pop)

#define KD_ENTRY_HEADER ((size_t)sizeof(kd_entry))

/* A timer: an expiry time and the hash of the key given it.  The keydir keeps a binary
 * min-heap of them, so the keys that expired are found without a sweep of the table. */
typedef struct {
    uint64_t expiry;
    uint64_t hash;
} kd_timer;

typedef struct {
    uint64_t *slots;
    size_t cap;        /* number of home slots */
    size_t nslots;     /* cap + overflow; the last slot always stays empty */
    size_t count;      /* live entries */
    size_t volatile_count; /* live entries with an expiry */
    char *arena;
    size_t arena_used, arena_cap, arena_dead;
    size_t key_bytes;  /* bytes of the live keys */
    kd_timer *timers;  /* min-heap on expiry; a timer whose key changed since is stale */
    size_t ntimers, timers_cap;
    uint64_t seed0, seed1;
    uint64_t gen;      /* bumped whenever entries move in (or leave) the arena: rebuild, clear */
} keydir;

/* ---- hashing: a multiply-fold hash, seeded per keydir so that chosen keys cannot
 * predictably collide. */
static inline uint64_t kd_fold(uint64_t a, uint64_t b) {
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}
static inline uint64_t kd_r64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint64_t kd_r32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

#define KD_K1 0xa0761d6478bd642full
#define KD_K2 0xe7037ed1a0b428dbull
#define KD_K3 0x8ebc6af09c88c6e3ull

static inline uint64_t kd_hash(const keydir *kd, const void *key, size_t len) {
    const unsigned char *p = (const unsigned char *)key;
    uint64_t h = kd->seed0 ^ (len * KD_K3);
    size_t n = len;
    while (n > 16) {
        h = kd_fold(kd_r64(p) ^ KD_K1 ^ h, kd_r64(p + 8) ^ kd->seed1);
        p += 16;
        n -= 16;
    }
    uint64_t a, b;
    if (n >= 8) {          /* 8..16 bytes left: two possibly overlapping words */
        a = kd_r64(p);
        b = kd_r64(p + n - 8);
    } else if (n >= 4) {   /* 4..7 */
        a = kd_r32(p);
        b = kd_r32(p + n - 4);
    } else if (n > 0) {    /* 1..3 */
        a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
        b = 0;
    } else {
        a = b = 0;
    }
    h = kd_fold(a ^ KD_K1 ^ h, b ^ kd->seed1 ^ KD_K2);
    return kd_fold(h ^ KD_K2, h ^ KD_K3 ^ len);
}

/* ---- memory: the arena is grown with mremap on Linux, so growth never copies it and
 * unused capacity is never resident. */
static char *kd_arena_resize(char *old, size_t old_cap, size_t new_cap) {
#if defined(__linux__)
    void *p;
    if (old == NULL)
        p = mmap(NULL, new_cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    else
        p = mremap(old, old_cap, new_cap, MREMAP_MAYMOVE);
    return p == MAP_FAILED ? NULL : (char *)p;
#else
    (void)old_cap;
    return (char *)realloc(old, new_cap);
#endif
}
static void kd_arena_free(char *p, size_t cap) {
    if (p == NULL) return;
#if defined(__linux__)
    munmap(p, cap);
#else
    (void)cap;
    free(p);
#endif
}

static inline size_t kd_home(const keydir *kd, uint64_t h) {
    return (size_t)(((__uint128_t)h * kd->cap) >> 64);
}
static inline kd_entry *kd_entry_of_slot(const keydir *kd, uint64_t s) {
    return (kd_entry *)(kd->arena + (s >> KD_TAG_BITS) - 1);
}
static inline kd_entry *kd_entry_at(const keydir *kd, size_t i) {
    return kd_entry_of_slot(kd, kd->slots[i]);
}
static inline size_t kd_entry_bytes(const kd_entry *e) {
    return KD_ENTRY_HEADER + (size_t)e->klen_m1 + 1;
}

static int kd_init(keydir *kd, uint64_t seed0, uint64_t seed1) {
    memset(kd, 0, sizeof(*kd));
    kd->seed0 = seed0;
    kd->seed1 = seed1 | 1;
    kd->cap = 64;
    kd->nslots = kd->cap + 64;
    kd->slots = (uint64_t *)calloc(kd->nslots, sizeof(uint64_t));
    if (kd->slots == NULL) return -1;
    kd->arena_cap = 1 << 16;
    kd->arena = kd_arena_resize(NULL, 0, kd->arena_cap);
    if (kd->arena == NULL) { free(kd->slots); kd->slots = NULL; return -1; }
    return 0;
}

static void kd_free(keydir *kd) {
    free(kd->slots);
    kd->slots = NULL;
    free(kd->timers);
    kd->timers = NULL;
    kd->ntimers = kd->timers_cap = 0;
    kd->key_bytes = 0;
    kd_arena_free(kd->arena, kd->arena_cap);
    kd->arena = NULL;
    kd->count = kd->volatile_count = 0;
}

/* Index of the slot holding key, or -1. */
static inline int64_t kd_find(const keydir *kd, const void *key, size_t len, uint64_t h) {
    size_t i = kd_home(kd, h);
    uint64_t tag = h & KD_TAG_MASK;
    const uint64_t *slots = kd->slots;
    for (;; i++) {
        uint64_t s = slots[i];
        if (s == 0) return -1;
        if ((s & KD_TAG_MASK) == tag) {
            const kd_entry *e = kd_entry_of_slot(kd, s);
            if ((size_t)e->klen_m1 + 1 == len && memcmp(e->key, key, len) == 0) return (int64_t)i;
        }
    }
}

/* Memory-level parallelism for a batch of lookups (a replica applying a peer frame): the
 * home slot of hash h, then the entry its first tag match points at, are fetched ahead so that
 * the lookups that follow find them in cache instead of waiting on each miss in turn. */
static inline void kd_prefetch_home(const keydir *kd, uint64_t h) {
    __builtin_prefetch(&kd->slots[kd_home(kd, h)]);
}
/* The entry of the first slot from h's home whose tag matches, or NULL: a likely match, not a
 * checked one (the key is not compared), for prefetching only. */
static inline const kd_entry *kd_candidate(const keydir *kd, uint64_t h) {
    uint64_t tag = h & KD_TAG_MASK;
    for (size_t i = kd_home(kd, h);; i++) {
        uint64_t s = kd->slots[i];
        if (s == 0) return NULL;
        if ((s & KD_TAG_MASK) == tag) return kd_entry_of_slot(kd, s);
    }
}

/* Place a slot value for hash h in (slots, cap, nslots); 0 if the run hit the end. */
static inline int kd_place(uint64_t *slots, size_t cap, size_t nslots, uint64_t h, uint64_t sv,
                           size_t *where) {
    size_t i = (size_t)(((__uint128_t)h * cap) >> 64);
    while (slots[i]) i++;
    if (i >= nslots - 1) return 0;
    slots[i] = sv;
    *where = i;
    return 1;
}

/* Rebuild with `cap` home slots, compacting the arena (dead entries dropped). */
static int kd_rebuild(keydir *kd, size_t cap) {
    size_t live_bytes = kd->arena_used - kd->arena_dead;
    size_t acap = live_bytes + live_bytes / 2 + (1 << 16);
    for (;;) {
        size_t nslots = cap + cap / 16 + 64;
        uint64_t *slots = (uint64_t *)calloc(nslots, sizeof(uint64_t));
        char *arena = kd_arena_resize(NULL, 0, acap);
        if (slots == NULL || arena == NULL) {
            free(slots);
            kd_arena_free(arena, acap);
            return -1;
        }
        size_t used = 0, pos = 0, where;
        int overflow = 0;
        while (pos < kd->arena_used) {
            kd_entry *e = (kd_entry *)(kd->arena + pos);
            size_t n = kd_entry_bytes(e);
            pos += n;
            if (e->seg == KD_DEAD) continue;
            memcpy(arena + used, e, n);
            uint64_t h = kd_hash(kd, e->key, (size_t)e->klen_m1 + 1);
            if (!kd_place(slots, cap, nslots, h, ((uint64_t)(used + 1) << KD_TAG_BITS) | (h & KD_TAG_MASK),
                          &where)) {
                overflow = 1;
                break;
            }
            used += n;
        }
        if (overflow) { /* a pathological run reached the end: retry bigger */
            free(slots);
            kd_arena_free(arena, acap);
            cap += cap / 2;
            continue;
        }
        free(kd->slots);
        kd_arena_free(kd->arena, kd->arena_cap);
        kd->slots = slots;
        kd->cap = cap;
        kd->nslots = nslots;
        kd->arena = arena;
        kd->arena_cap = acap;
        kd->arena_used = used;
        kd->arena_dead = 0;
        kd->gen++;
        return 0;
    }
}

/* Insert a key known to be absent; fills seg/off/size/expiry with zeros.  Returns its slot
 * index, or -1 when memory runs out.  May move other entries (invalidates slot indices). */
static int64_t kd_insert(keydir *kd, const void *key, size_t len, uint64_t h) {
    if ((kd->count + 1) * 5 > kd->cap * 4) {
        if (kd_rebuild(kd, kd->cap + kd->cap / 2) < 0) return -1;
    }
    size_t need = KD_ENTRY_HEADER + len;
    if (kd->arena_used + need > kd->arena_cap) {
        size_t ncap = kd->arena_cap + kd->arena_cap / 2;
        if (ncap < kd->arena_used + need) ncap = kd->arena_used + need + (1 << 16);
        char *a = kd_arena_resize(kd->arena, kd->arena_cap, ncap);
        if (a == NULL) return -1;
        kd->arena = a;
        kd->arena_cap = ncap;
    }
    for (;;) {
        size_t where;
        uint64_t sv = ((uint64_t)(kd->arena_used + 1) << KD_TAG_BITS) | (h & KD_TAG_MASK);
        if (kd_place(kd->slots, kd->cap, kd->nslots, h, sv, &where)) {
            kd_entry *e = (kd_entry *)(kd->arena + kd->arena_used);
            memset(e, 0, KD_ENTRY_HEADER);
            e->klen_m1 = (uint16_t)(len - 1);
            memcpy(e->key, key, len);
            kd->arena_used += need;
            kd->key_bytes += len;
            kd->count++;
            return (int64_t)where;
        }
        if (kd_rebuild(kd, kd->cap + kd->cap / 2) < 0) return -1;
    }
}

/* Remove the entry in slot i (backward-shift deletion keeps every run contiguous). */
static void kd_remove(keydir *kd, size_t i) {
    kd_entry *e = kd_entry_at(kd, i);
    if (e->expiry) kd->volatile_count--;
    e->seg = KD_DEAD;
    kd->arena_dead += kd_entry_bytes(e);
    kd->key_bytes -= (size_t)e->klen_m1 + 1;
    kd->count--;
    size_t hole = i, j = i + 1;
    for (;; j++) {
        uint64_t s = kd->slots[j];
        if (s == 0) break;
        kd_entry *f = kd_entry_of_slot(kd, s);
        size_t home = kd_home(kd, kd_hash(kd, f->key, (size_t)f->klen_m1 + 1));
        if (home <= hole) {
            kd->slots[hole] = s;
            hole = j;
        }
    }
    kd->slots[hole] = 0;
}

/* Size the table for n keys up front (start-up knows roughly how many are coming). */
static int kd_reserve(keydir *kd, size_t n) {
    size_t cap = kd->cap;
    while (n * 5 > cap * 4) cap += cap / 2;
    return cap == kd->cap ? 0 : kd_rebuild(kd, cap);
}

/* Compact the arena when most of it is garbage; returns -1 on memory failure. */
static int kd_maybe_compact(keydir *kd) {
    if (kd->arena_dead > ((size_t)1 << 20) && kd->arena_dead * 2 > kd->arena_used)
        return kd_rebuild(kd, kd->cap);
    return 0;
}

/* Empty the keydir, keeping its current table size small again. */
static int kd_clear(keydir *kd) {
    uint64_t s0 = kd->seed0, s1 = kd->seed1, gen = kd->gen;
    kd_free(kd);
    int rc = kd_init(kd, s0, s1);
    kd->gen = gen + 1;
    return rc;
}

/* SCAN support: the first hash whose home slot is >= i, or 0 when i is past the homes. */
static inline uint64_t kd_cursor_for_slot(const keydir *kd, size_t i) {
    if (i >= kd->cap) return 0;
    __uint128_t num = ((__uint128_t)i << 64) + kd->cap - 1;
    return (uint64_t)(num / kd->cap);
}

/* ---- expiry timers ---- */
static inline int kd_timer_less(const kd_timer *a, const kd_timer *b) {
    return a->expiry < b->expiry;
}
static void kd_timer_sift_down(kd_timer *h, size_t n, size_t i) {
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && kd_timer_less(&h[c + 1], &h[c])) c++;
        if (!kd_timer_less(&h[c], &h[i])) return;
        kd_timer t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

/* Rebuild the heap from the live entries with an expiry, dropping stale timers. */
static void kd_timers_compact(keydir *kd) {
    size_t n = 0, pos = 0;
    while (pos < kd->arena_used && n < kd->timers_cap) {
        kd_entry *e = (kd_entry *)(kd->arena + pos);
        pos += kd_entry_bytes(e);
        if (e->seg == KD_DEAD || e->expiry == 0) continue;
        kd->timers[n].expiry = e->expiry;
        kd->timers[n].hash = kd_hash(kd, e->key, (size_t)e->klen_m1 + 1);
        n++;
    }
    kd->ntimers = n;
    for (size_t i = n / 2; i-- > 0;) kd_timer_sift_down(kd->timers, n, i);
}

/* Add a timer; -1 when memory runs out.  When the heap is full and mostly stale it is
 * compacted instead of grown, so it stays within about twice the keys with an expiry. */
static int kd_timer_push(keydir *kd, uint64_t expiry, uint64_t h) {
    if (kd->ntimers == kd->timers_cap) {
        if (kd->ntimers > 2 * kd->volatile_count + 1024) {
            kd_timers_compact(kd);
        }
        if (kd->ntimers == kd->timers_cap) {
            size_t ncap = kd->timers_cap ? kd->timers_cap * 2 : 1024;
            kd_timer *t = (kd_timer *)realloc(kd->timers, ncap * sizeof(kd_timer));
            if (t == NULL) return -1;
            kd->timers = t;
            kd->timers_cap = ncap;
        }
    }
    size_t i = kd->ntimers++;
    kd_timer *hp = kd->timers;
    hp[i].expiry = expiry;
    hp[i].hash = h;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!kd_timer_less(&hp[i], &hp[parent])) break;
        kd_timer t = hp[i];
        hp[i] = hp[parent];
        hp[parent] = t;
        i = parent;
    }
    return 0;
}

static inline int kd_timer_due(const keydir *kd, uint64_t now) {
    return kd->ntimers > 0 && kd->timers[0].expiry <= now;
}

/* Remove and return the earliest timer (the heap must not be empty). */
static kd_timer kd_timer_pop(keydir *kd) {
    kd_timer top = kd->timers[0];
    kd->timers[0] = kd->timers[--kd->ntimers];
    kd_timer_sift_down(kd->timers, kd->ntimers, 0);
    return top;
}

/* Slot of a live entry with this key hash and this expiry, or -1 (the timer is stale).  Keys
 * with equal hashes share a run, so the run from the hash's home slot holds every candidate. */
static int64_t kd_find_timer(const keydir *kd, uint64_t h, uint64_t expiry) {
    size_t i = kd_home(kd, h);
    uint64_t tag = h & KD_TAG_MASK;
    for (;; i++) {
        uint64_t s = kd->slots[i];
        if (s == 0) return -1;
        if ((s & KD_TAG_MASK) == tag) {
            const kd_entry *e = kd_entry_of_slot(kd, s);
            if (e->expiry == expiry && kd_hash(kd, e->key, (size_t)e->klen_m1 + 1) == h)
                return (int64_t)i;
        }
    }
}

/* Bytes of memory the keydir holds per live key: slots, arena in use and timers. */
static inline size_t kd_memory(const keydir *kd) {
    return kd->nslots * sizeof(uint64_t) + kd->arena_used + kd->timers_cap * sizeof(kd_timer);
}

#endif
