/* Reply scanners for the client side: RESP2/RESP3 and the memcached text protocol.
 *
 * They do no I/O and allocate nothing: given [p, end) they find where the next whole reply
 * ends and what kind it is, so a caller can count hundreds of pipelined replies per read
 * without building a Python object for each. NULL with *bad == 0 means "incomplete, feed me
 * more"; NULL with *bad != 0 means the bytes are not a valid reply stream.
 */
#ifndef FASTDYN_CLIENT_WIRE_H
#define FASTDYN_CLIENT_WIRE_H

#include <stdint.h>
#include <string.h>

#define FD_REPLY_OK 0
#define FD_REPLY_ERROR 1
#define FD_REPLY_NIL 2
#define FD_REPLY_PUSH 3

#define FD_MAX_BULK (512LL * 1024 * 1024)
#define FD_MAX_ELEMENTS (1LL << 32)
#define FD_MAX_DEPTH 64

/* The end of the CRLF-terminated line starting at p (pointer past the LF). */
static inline const char *fd_skip_line(const char *p, const char *end, int *bad)
{
    const char *cr = (const char *)memchr(p, '\r', (size_t)(end - p));
    if (cr == NULL || cr + 1 >= end)
        return NULL;
    if (cr[1] != '\n') {
        *bad = 1;
        return NULL;
    }
    return cr + 2;
}

/* A signed decimal line ("-1\r\n", "100\r\n"); at most 18 digits so it cannot overflow. */
static inline const char *fd_read_int_line(const char *p, const char *end, int64_t *out, int *bad)
{
    const char *cr = (const char *)memchr(p, '\r', (size_t)(end - p));
    const char *q = p;
    int64_t v = 0;
    int neg = 0;
    if (cr == NULL || cr + 1 >= end)
        return NULL;
    if (cr[1] != '\n') {
        *bad = 1;
        return NULL;
    }
    if (q < cr && *q == '-') {
        neg = 1;
        q++;
    }
    if (q == cr || cr - q > 18) {
        *bad = 1;
        return NULL;
    }
    for (; q < cr; q++) {
        if (*q < '0' || *q > '9') {
            *bad = 1;
            return NULL;
        }
        v = v * 10 + (*q - '0');
    }
    *out = neg ? -v : v;
    return cr + 2;
}

/* An integer reply's line: an optional '-' and 1..19 digits (any int64). */
static inline const char *fd_check_int_line(const char *p, const char *end, int *bad)
{
    const char *q = fd_skip_line(p, end, bad);
    const char *d = p;
    if (q == NULL)
        return NULL;
    if (*d == '-')
        d++;
    if (d == q - 2 || q - 2 - d > 19) {
        *bad = 1;
        return NULL;
    }
    for (; d < q - 2; d++) {
        if (*d < '0' || *d > '9') {
            *bad = 1;
            return NULL;
        }
    }
    return q;
}

/* One whole RESP2/RESP3 value starting at p. *kind says OK, ERROR, NIL or PUSH. */
static const char *fd_resp_skip(const char *p, const char *end, int depth, int *kind, int *bad)
{
    const char *q;
    int64_t n, i;
    int sub;
    char t;
    if (p >= end)
        return NULL;
    if (depth > FD_MAX_DEPTH) {
        *bad = 1;
        return NULL;
    }
    t = *p++;
    switch (t) {
    case ':':
        *kind = FD_REPLY_OK;
        return fd_check_int_line(p, end, bad);
    case '+': case ',': case '(': case '#':
        *kind = FD_REPLY_OK;
        return fd_skip_line(p, end, bad);
    case '-':
        *kind = FD_REPLY_ERROR;
        return fd_skip_line(p, end, bad);
    case '_':
        *kind = FD_REPLY_NIL;
        return fd_skip_line(p, end, bad);
    case '$': case '!': case '=':
        q = fd_read_int_line(p, end, &n, bad);
        if (q == NULL)
            return NULL;
        if (n < 0) {
            if (n != -1 || t != '$') {
                *bad = 1;
                return NULL;
            }
            *kind = FD_REPLY_NIL;
            return q;
        }
        if (n > FD_MAX_BULK) {
            *bad = 1;
            return NULL;
        }
        if (end - q < n + 2)
            return NULL;
        if (q[n] != '\r' || q[n + 1] != '\n') {
            *bad = 1;
            return NULL;
        }
        *kind = (t == '!') ? FD_REPLY_ERROR : FD_REPLY_OK;
        return q + n + 2;
    case '*': case '~': case '>': case '%': case '|':
        q = fd_read_int_line(p, end, &n, bad);
        if (q == NULL)
            return NULL;
        if (n < 0) {
            if (n != -1 || t != '*') {
                *bad = 1;
                return NULL;
            }
            *kind = FD_REPLY_NIL;
            return q;
        }
        if (n > FD_MAX_ELEMENTS) {
            *bad = 1;
            return NULL;
        }
        if (t == '%' || t == '|')
            n *= 2;
        for (i = 0; i < n; i++) {
            q = fd_resp_skip(q, end, depth + 1, &sub, bad);
            if (q == NULL)
                return NULL;
        }
        if (t == '|') /* an attribute annotates the value that follows it */
            return fd_resp_skip(q, end, depth + 1, kind, bad);
        *kind = (t == '>') ? FD_REPLY_PUSH : FD_REPLY_OK;
        return q;
    default:
        *bad = 1;
        return NULL;
    }
}

/* The first element of an array reply when it is a bulk or simple string (DYN.GET's context). */
static inline int fd_resp_first_string(const char *p, const char *end, const char **s, int64_t *len)
{
    int bad = 0;
    int64_t n;
    const char *q;
    if (p >= end || (*p != '*' && *p != '~'))
        return 0;
    q = fd_read_int_line(p + 1, end, &n, &bad);
    if (q == NULL || n < 1 || q >= end)
        return 0;
    if (*q == '$') {
        const char *d = fd_read_int_line(q + 1, end, &n, &bad);
        if (d == NULL || n < 0 || end - d < n + 2)
            return 0;
        *s = d;
        *len = n;
        return 1;
    }
    if (*q == '+') {
        const char *cr = (const char *)memchr(q, '\r', (size_t)(end - q));
        if (cr == NULL)
            return 0;
        *s = q + 1;
        *len = cr - q - 1;
        return 1;
    }
    return 0;
}

static inline int fd_starts(const char *p, int64_t len, const char *lit)
{
    int64_t n = (int64_t)strlen(lit);
    return len >= n && memcmp(p, lit, (size_t)n) == 0;
}

static inline int fd_equals(const char *p, int64_t len, const char *lit)
{
    return len == (int64_t)strlen(lit) && memcmp(p, lit, (size_t)len) == 0;
}

/* The data length of a "VALUE <key> <flags> <bytes> [<cas>]" line, or -1 if malformed. */
static inline int64_t fd_mc_value_bytes(const char *line, int64_t len)
{
    int64_t i = 0, v = 0;
    int field = 0, digits = 0;
    while (i < len && field < 3) { /* skip "VALUE", key, flags */
        while (i < len && line[i] != ' ')
            i++;
        while (i < len && line[i] == ' ')
            i++;
        field++;
    }
    if (field < 3)
        return -1;
    for (; i < len && line[i] != ' '; i++) {
        if (line[i] < '0' || line[i] > '9' || ++digits > 12)
            return -1;
        v = v * 10 + (line[i] - '0');
    }
    return digits ? v : -1;
}

/* One whole memcached text-protocol reply: a VALUE/STAT block ended by END, or one line. */
static const char *fd_mc_skip(const char *p, const char *end, int *kind, int *bad)
{
    int64_t blocks = 0;
    for (;;) {
        const char *lf = (const char *)memchr(p, '\n', (size_t)(end - p));
        int64_t len;
        if (lf == NULL)
            return NULL;
        if (lf == p || lf[-1] != '\r') {
            *bad = 1;
            return NULL;
        }
        len = lf - 1 - p;
        if (fd_starts(p, len, "VALUE ")) {
            int64_t n = fd_mc_value_bytes(p, len);
            const char *d = lf + 1;
            if (n < 0 || n > FD_MAX_BULK) {
                *bad = 1;
                return NULL;
            }
            if (end - d < n + 2)
                return NULL;
            if (d[n] != '\r' || d[n + 1] != '\n') {
                *bad = 1;
                return NULL;
            }
            p = d + n + 2;
            blocks++;
            continue;
        }
        if (fd_starts(p, len, "STAT ")) {
            p = lf + 1;
            blocks++;
            continue;
        }
        if (fd_equals(p, len, "END")) {
            *kind = blocks ? FD_REPLY_OK : FD_REPLY_NIL;
            return lf + 1;
        }
        if (fd_equals(p, len, "ERROR") || fd_starts(p, len, "CLIENT_ERROR") ||
            fd_starts(p, len, "SERVER_ERROR")) {
            *kind = FD_REPLY_ERROR;
            return lf + 1;
        }
        if (blocks) { /* only END may follow VALUE or STAT lines */
            *bad = 1;
            return NULL;
        }
        *kind = fd_equals(p, len, "NOT_FOUND") ? FD_REPLY_NIL : FD_REPLY_OK;
        return lf + 1;
    }
}

#endif
