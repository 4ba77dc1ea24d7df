/* XXH64: the 64-bit xxHash algorithm (Yann Collet), written from its public specification.
 *
 * fastdyn hashes every key with fd_xxh64(key, len, FD_KEY_SEED). The algorithm and the seed are
 * part of the on-disk and on-the-wire contract: changing either moves every key to another
 * partition and Merkle segment.
 */
#ifndef FASTDYN_XXH64_H
#define FASTDYN_XXH64_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FD_KEY_SEED 0ULL

#define FD_P64_1 0x9E3779B185EBCA87ULL
#define FD_P64_2 0xC2B2AE3D27D4EB4FULL
#define FD_P64_3 0x165667B19E3779F9ULL
#define FD_P64_4 0x85EBCA77C2B2AE63ULL
#define FD_P64_5 0x27D4EB2F165667C5ULL

static inline uint64_t fd_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* The specification reads lanes little-endian whatever the host order. */
static inline uint64_t fd_read64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t fd_read32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t fd_xxh64_round(uint64_t acc, uint64_t lane) {
    acc += lane * FD_P64_2;
    acc = fd_rotl64(acc, 31);
    return acc * FD_P64_1;
}

static inline uint64_t fd_xxh64_merge(uint64_t acc, uint64_t v) {
    acc ^= fd_xxh64_round(0, v);
    return acc * FD_P64_1 + FD_P64_4;
}

static inline uint64_t fd_xxh64(const void *data, size_t len, uint64_t seed) {
    const unsigned char *p = (const unsigned char *)data;
    const unsigned char *end = p + len;
    uint64_t h;

    if (len >= 32) {
        /* Four independent accumulators over 32-byte stripes. */
        const unsigned char *limit = end - 32;
        uint64_t v1 = seed + FD_P64_1 + FD_P64_2;
        uint64_t v2 = seed + FD_P64_2;
        uint64_t v3 = seed;
        uint64_t v4 = seed - FD_P64_1;
        do {
            v1 = fd_xxh64_round(v1, fd_read64(p));
            v2 = fd_xxh64_round(v2, fd_read64(p + 8));
            v3 = fd_xxh64_round(v3, fd_read64(p + 16));
            v4 = fd_xxh64_round(v4, fd_read64(p + 24));
            p += 32;
        } while (p <= limit);
        h = fd_rotl64(v1, 1) + fd_rotl64(v2, 7) + fd_rotl64(v3, 12) + fd_rotl64(v4, 18);
        h = fd_xxh64_merge(h, v1);
        h = fd_xxh64_merge(h, v2);
        h = fd_xxh64_merge(h, v3);
        h = fd_xxh64_merge(h, v4);
    } else {
        h = seed + FD_P64_5;
    }
    h += (uint64_t)len;

    while (p + 8 <= end) {
        h ^= fd_xxh64_round(0, fd_read64(p));
        h = fd_rotl64(h, 27) * FD_P64_1 + FD_P64_4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)fd_read32(p) * FD_P64_1;
        h = fd_rotl64(h, 23) * FD_P64_2 + FD_P64_3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * FD_P64_5;
        h = fd_rotl64(h, 11) * FD_P64_1;
        p++;
    }
    /* Avalanche. */
    h ^= h >> 33;
    h *= FD_P64_2;
    h ^= h >> 29;
    h *= FD_P64_3;
    h ^= h >> 32;
    return h;
}

/* splitmix64's finaliser: a cheap bijective mixer for integers (partition numbers, seeds). */
static inline uint64_t fd_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

#endif
