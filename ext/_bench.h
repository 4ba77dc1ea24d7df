/* Load-generator helpers: a monotonic clock, a fast PRNG, YCSB key choosers and the
 * log-linear latency histogram's bucket index. */
#ifndef FASTDYN_BENCH_H
#define FASTDYN_BENCH_H

#include <math.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC is what Python's time.monotonic() reads, so parent and workers agree. */
static inline uint64_t fd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xoshiro256** (Blackman & Vigna), seeded through splitmix64. */
typedef struct { uint64_t s[4]; } fd_rng;

static inline uint64_t fd_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void fd_rng_seed(fd_rng *r, uint64_t seed)
{
    int i;
    for (i = 0; i < 4; i++)
        r->s[i] = fd_splitmix64(&seed);
}

static inline uint64_t fd_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t fd_rng_next(fd_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = fd_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = fd_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static inline double fd_rng_double(fd_rng *r) { return (double)(fd_rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform in [0, n) without modulo bias worth mentioning (Lemire's multiply-shift). */
static inline uint64_t fd_rng_below(fd_rng *r, uint64_t n)
{
    return (uint64_t)(((__uint128_t)fd_rng_next(r) * n) >> 64);
}

/* Zipfian ranks in [0, n) with exponent theta in (0, 1): Gray et al., "Quickly generating
 * billion-record synthetic databases" (SIGMOD 1994), the generator YCSB uses. */
typedef struct { uint64_t n; double theta, alpha, zetan, eta, half_pow; } fd_zipf;

static inline void fd_zipf_init(fd_zipf *z, uint64_t n, double theta)
{
    double zeta2 = 1.0 + pow(0.5, theta);
    double zetan = 0.0;
    uint64_t i, exact = n < 10000000ull ? n : 10000000ull;
    for (i = 1; i <= exact; i++)
        zetan += 1.0 / pow((double)i, theta);
    if (n > exact) /* the rest of the sum as its integral (error far below 1e-6 relative) */
        zetan += (pow((double)n + 0.5, 1.0 - theta) - pow((double)exact + 0.5, 1.0 - theta)) /
                 (1.0 - theta);
    z->n = n;
    z->theta = theta;
    z->zetan = zetan;
    z->alpha = 1.0 / (1.0 - theta);
    z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / zetan);
    z->half_pow = 1.0 + pow(0.5, theta);
}

static inline uint64_t fd_zipf_next(fd_zipf *z, fd_rng *r)
{
    double u = fd_rng_double(r);
    double uz = u * z->zetan;
    uint64_t v;
    if (uz < 1.0)
        return 0;
    if (uz < z->half_pow)
        return z->n > 1 ? 1 : 0;
    v = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
    return v < z->n ? v : z->n - 1;
}

/* FNV-1a over the 8 bytes of x: scatters zipfian ranks over the key space as YCSB's
 * ScrambledZipfianGenerator does, so the hot keys are not all neighbours. */
static inline uint64_t fd_fnv64(uint64_t x)
{
    uint64_t h = 0xcbf29ce484222325ull;
    int i;
    for (i = 0; i < 8; i++) {
        h ^= x & 0xff;
        h *= 0x100000001b3ull;
        x >>= 8;
    }
    return h;
}

/* Log-linear histogram of nanoseconds: exact below 256 ns, then 128 buckets per power of two
 * (relative error < 0.8%), like HdrHistogram with ~2 significant digits. Values are capped
 * at 2^40 ns (~18 minutes). */
#define FD_HIST_SUB_BITS 7
#define FD_HIST_SUB (1 << FD_HIST_SUB_BITS)
#define FD_HIST_MAX_BITS 40
#define FD_HIST_BUCKETS ((FD_HIST_MAX_BITS - FD_HIST_SUB_BITS + 1) * FD_HIST_SUB)

static inline int fd_hist_index(uint64_t v)
{
    int msb, shift;
    if (v < 2 * FD_HIST_SUB)
        return (int)v;
    if (v >= (1ull << FD_HIST_MAX_BITS))
        v = (1ull << FD_HIST_MAX_BITS) - 1;
    msb = 63 - __builtin_clzll(v);
    shift = msb - FD_HIST_SUB_BITS;
    return (shift + 1) * FD_HIST_SUB + (int)((v >> shift) - FD_HIST_SUB);
}

#endif
