/* Pre-faulting of segment mappings.
 *
 * Records are written with write() and read through a shared read-only mapping.  The pages are
 * in the page cache already, but the first read of each page through the mapping would still
 * take a page fault (~1 us).  MADV_POPULATE_READ (Linux 5.14) maps a freshly written range in
 * one call instead, for a fraction of that per page.  Older kernels refuse it: then we stop
 * asking and reads fault as before.
 */
#ifndef FASTDYN_SEGMENT_MAP_H
#define FASTDYN_SEGMENT_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <unistd.h>
#include <sys/mman.h>

/* Records and hints are read and written with plain loads and stores: the on-disk format is
 * little-endian, so the host must be. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fastdyn's storage engine needs a little-endian host"
#endif

#if defined(__linux__) && !defined(MADV_POPULATE_READ)
#define MADV_POPULATE_READ 22
#endif

static int seg_prefault_supported = 1;

static void seg_prefault(char *map, size_t from, size_t to) {
#if defined(__linux__)
    if (!seg_prefault_supported || map == NULL || to <= from) return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t start = from & ~(page - 1);
    if (madvise(map + start, to - start, MADV_POPULATE_READ) != 0) {
        if (errno == EINVAL) seg_prefault_supported = 0;
    }
#else
    (void)map; (void)from; (void)to;
#endif
}

#endif
