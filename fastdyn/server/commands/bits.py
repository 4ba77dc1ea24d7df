"""Bit operations on strings: GETBIT, SETBIT, BITCOUNT, BITPOS (Redis' bitops.c). Bit 0 is the
most significant bit of the first byte."""
from fastdyn._resp import parse_int
from fastdyn.cluster.coordinator import KEEP
from fastdyn.errors import CommandError
from fastdyn.server.commands.registry import (ERR_SYNTAX, CommandGroup, int_arg, integer,
                                              reply_result, then)
from fastdyn.server.commands.strings import check_length

bitmap = CommandGroup("bitmap")
command = bitmap.command

ONE_KEY = (1, 1, 1)


def _bit_offset(conn, arg: bytes) -> int:
    """Redis' limit: the byte holding the bit lies within proto-max-bulk-len."""
    offset = parse_int(arg)
    if offset is None or offset < 0 or offset >> 3 >= conn.server.config.max_bulk_bytes:
        raise CommandError("ERR bit offset is not an integer or out of range")
    return offset


def _bit(value: bytes, offset: int) -> int:
    byte = offset >> 3
    return (value[byte] >> (7 - (offset & 7))) & 1 if byte < len(value) else 0


@command("getbit", 3, "readonly fast", ONE_KEY, "Returns a bit value by offset.")
def cmd_getbit(conn, args):
    offset = _bit_offset(conn, args[2])

    def encode(out, value):
        conn.keyspace.count((value,))
        out.integer(_bit(value, offset) if value is not None else 0)

    reply_result(conn, conn.coord.get(args[1]), encode)


@command("setbit", 4, "write denyoom", ONE_KEY,
         "Sets or clears the bit at offset of the string value. Creates the key if it doesn't "
         "exist.")
def cmd_setbit(conn, args):
    offset = _bit_offset(conn, args[2])
    on = parse_int(args[3])
    if on not in (0, 1):
        raise CommandError("ERR bit is not an integer or out of range")
    byte = offset >> 3
    config = conn.server.config

    def decide(current, current_expiry, now):
        old = _bit(current, offset) if current is not None else 0
        if current is not None and byte < len(current) and old == on:
            return KEEP, old
        check_length(config, byte + 1)
        value = bytearray(current if current is not None else b"")
        if len(value) <= byte:
            value.extend(bytes(byte + 1 - len(value)))
        mask = 1 << (7 - (offset & 7))
        value[byte] = (value[byte] | mask) if on else (value[byte] & ~mask)
        return (bytes(value), current_expiry if current is not None else 0), old

    reply_result(conn, conn.coord.update(args[1], decide), integer)


def _range(args, first: int, length: int, unit_arg: int):
    """The inclusive bit range [lo, hi] that arguments first (start) and first + 1 (end, when
    given) select in a string of `length` bytes, under Redis' rules: negative indexes count
    from the end, BYTE (default) or BIT units, clamped to the string. hi < lo: empty."""
    start = int_arg(args[first])
    end_given = len(args) > first + 1
    bits = False
    if len(args) > unit_arg:
        unit = args[unit_arg].lower()
        if unit == b"bit":
            bits = True
        elif unit != b"byte":
            raise CommandError(ERR_SYNTAX)
    total = length * 8 if bits else length
    end = int_arg(args[first + 1]) if end_given else total - 1
    if start < 0:
        start += total
    if end < 0:
        end += total
    start, end = max(start, 0), min(max(end, 0), total - 1)
    if start > end:
        return 0, -1
    return (start, end) if bits else (start * 8, end * 8 + 7)


def _bits_in(value: bytes, lo: int, hi: int) -> int:
    """The bits lo..hi of value as one integer, bit lo the most significant."""
    chunk = int.from_bytes(value[lo >> 3:(hi >> 3) + 1], "big")
    return (chunk >> (7 - (hi & 7))) & ((1 << (hi - lo + 1)) - 1)


@command("bitcount", -2, "readonly", ONE_KEY,
         "Counts the number of set bits (population counting) in a string.")
def cmd_bitcount(conn, args):
    def count(value):
        conn.keyspace.count((value,))
        # Redis looks the key up first: a missing key counts 0 whatever the arguments say
        if value is None:
            return 0
        if len(args) == 2:
            lo, hi = 0, len(value) * 8 - 1
        elif len(args) == 3 or len(args) > 5:
            raise CommandError(ERR_SYNTAX)
        else:
            start, end = int_arg(args[2]), int_arg(args[3])
            if start < 0 and end < 0 and start > end:
                return 0
            lo, hi = _range(args, 2, len(value), 4)
        return _bits_in(value, lo, hi).bit_count() if lo <= hi else 0

    reply_result(conn, then(conn.coord.get(args[1]), count), integer)


@command("bitpos", -3, "readonly", ONE_KEY,
         "Finds the first set (1) or clear (0) bit in a string.")
def cmd_bitpos(conn, args):
    bit = int_arg(args[2])
    if bit not in (0, 1):
        raise CommandError("ERR The bit argument must be 1 or 0.")

    def find(value):
        conn.keyspace.count((value,))
        # a missing key is an endless run of clear bits
        if value is None:
            return -1 if bit else 0
        if len(args) > 6:
            raise CommandError(ERR_SYNTAX)
        lo, hi = _range(args, 3, len(value), 5) if len(args) > 3 else (0, len(value) * 8 - 1)
        if lo > hi:
            return -1
        width = hi - lo + 1
        bits = _bits_in(value, lo, hi)
        if not bit:
            bits ^= (1 << width) - 1
        if bits:
            return lo + width - bits.bit_length()
        # no clear bit in the string: without an explicit end the string continues with
        # clear bits, so the first one is just past it
        return hi + 1 if not bit and len(args) <= 4 else -1

    reply_result(conn, then(conn.coord.get(args[1]), find), integer)
