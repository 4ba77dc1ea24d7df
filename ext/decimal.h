/* Unsigned decimal digits written straight into a buffer (RESP length headers, generated
 * requests): snprintf's format parsing cost a tenth of a pipelined GET's CPU. */
#ifndef FASTDYN_DECIMAL_H
#define FASTDYN_DECIMAL_H
#include <stdint.h>

/* Writes v in decimal at p (at most 20 bytes) and returns the position after it. */
static inline char *put_uint(char *p, uint64_t v) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

#endif
