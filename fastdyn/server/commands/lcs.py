"""LCS: the longest common subsequence of two strings and its matching ranges, as Redis'
lcsCommand computes them (same table, same walk back, so the same ranges in the same order)."""
import numpy as np


def lcs_table(a: bytes, b: bytes):
    """table[i, j] = LCS length of a[:i] and b[:j]. A row is the running maximum of
    max(row above, diagonal + 1 where the bytes match), so each row is a few array operations."""
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=np.uint32)
    bb = np.frombuffer(b, dtype=np.uint8)
    for i in range(1, len(a) + 1):
        above = table[i - 1]
        row = np.where(bb == a[i - 1], above[:-1] + 1, above[1:])
        np.maximum.accumulate(row, out=table[i, 1:])
    return table


def lcs(a: bytes, b: bytes, min_match_len=None):
    """(the common subsequence, [(a_start, a_end, b_start, b_end), ...]): the ranges of
    contiguous matches from the end of the strings backwards, those shorter than
    min_match_len left out; no ranges when min_match_len is None."""
    if not a or not b:
        return b"", []
    table = lcs_table(a, b)
    length = int(table[len(a), len(b)])
    out = bytearray(length)
    ranges = []
    want_ranges = min_match_len is not None
    i, j, k = len(a), len(b), length
    # current range; a_start == len(a) means none is open
    a_start, a_end, b_start, b_end = len(a), 0, 0, 0
    while i > 0 and j > 0:
        emit = False
        if a[i - 1] == b[j - 1]:
            out[k - 1] = a[i - 1]
            if a_start == len(a):
                a_start = a_end = i - 1
                b_start = b_end = j - 1
            elif a_start == i and b_start == j:
                a_start -= 1
                b_start -= 1
            else:
                emit = True
            if a_start == 0 or b_start == 0:
                emit = True
            k, i, j = k - 1, i - 1, j - 1
        else:
            if table[i - 1, j] > table[i, j - 1]:
                i -= 1
            else:
                j -= 1
            if a_start != len(a):
                emit = True
        if emit:
            if want_ranges and a_end - a_start + 1 >= min_match_len:
                ranges.append((a_start, a_end, b_start, b_end))
            a_start = len(a)
    return bytes(out), ranges
