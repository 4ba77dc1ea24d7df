/* CRC-32C (Castagnoli), the checksum of every log record and hint file.
 *
 * x86-64 CPUs with SSE4.2 compute it in hardware (8 bytes per instruction); everything else
 * uses a slicing-by-8 table.  The choice is made once, at first use.
 */
#ifndef FASTDYN_CRC32C_H
#define FASTDYN_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint32_t crc32c_table[8][256];
static int crc32c_mode = -1; /* -1 unknown, 0 table, 1 hardware */

static void crc32c_init_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc32c_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = crc32c_table[0][c & 0xff] ^ (c >> 8);
            crc32c_table[t][n] = c;
        }
    }
}

static uint32_t crc32c_sw(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* slicing-by-8 reads the input as little-endian words */
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc32c_table[7][w & 0xff] ^ crc32c_table[6][(w >> 8) & 0xff] ^
              crc32c_table[5][(w >> 16) & 0xff] ^ crc32c_table[4][(w >> 24) & 0xff] ^
              crc32c_table[3][(w >> 32) & 0xff] ^ crc32c_table[2][(w >> 40) & 0xff] ^
              crc32c_table[1][(w >> 48) & 0xff] ^ crc32c_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
#endif
    while (n--) crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = ~crc & 0xffffffffu;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
#define CRC32C_HAVE_HW 1
#else
#define CRC32C_HAVE_HW 0
#endif

static void crc32c_setup(void) {
    crc32c_init_table();
#if CRC32C_HAVE_HW
    __builtin_cpu_init();
    crc32c_mode = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
    crc32c_mode = 0;
#endif
}

/* Extend `crc` (0 to start) with n bytes at p. */
static inline uint32_t crc32c_extend(uint32_t crc, const void *p, size_t n) {
#if CRC32C_HAVE_HW
    if (crc32c_mode == 1) return crc32c_hw(crc, (const unsigned char *)p, n);
#endif
    return crc32c_sw(crc, (const unsigned char *)p, n);
}

/* The table version, always available: tests compare both paths. */
static inline uint32_t crc32c_portable(uint32_t crc, const void *p, size_t n) {
    return crc32c_sw(crc, (const unsigned char *)p, n);
}

#endif
