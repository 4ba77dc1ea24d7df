"""Sans-IO framing of the peer protocol: bytes in, frames out; frames in, bytes out.

Every frame is an 11-byte little-endian header followed by its payload:

    length u32   payload bytes after the header
    version u8   VERSION; any other value is a ProtocolError (the header is the only thing it
                 covers: payload layouts evolve through new message kinds, see messages.py)
    kind u8      message kind (messages.py); the codec does not interpret it
    flags u8     FLAG_RESPONSE, FLAG_ERROR; other bits set are a ProtocolError
    req_id u32   chosen by the requester, echoed by the response

A response carries the request's kind and id; an error response has both flags set and a
UTF-8 message as its payload. FrameDecoder and FrameEncoder are compiled (ext/_peer.pyx):
the decoder returns Frame objects whose payload is a memoryview into the received bytes, the
encoder appends each frame to one buffer that leaves in one write.
"""
from __future__ import annotations

import struct

from fastdyn._peer import (DEFAULT_MAX_PAYLOAD, FLAG_ERROR, FLAG_RESPONSE, HEADER_SIZE, VERSION,
                           Frame, FrameDecoder, FrameEncoder)

__all__ = ["VERSION", "HEADER_SIZE", "FLAG_RESPONSE", "FLAG_ERROR", "DEFAULT_MAX_PAYLOAD",
           "Frame", "FrameDecoder", "FrameEncoder", "encode_frame", "frame_spans"]

HEADER = struct.Struct("<IBBBI")
MAX_REQ_ID = 0xFFFFFFFF


def encode_frame(kind: int, flags: int, req_id: int, payload=b"") -> bytes:
    return HEADER.pack(len(payload), VERSION, kind, flags, req_id) + payload


def frame_spans(data) -> list[tuple[int, int]]:
    """(start, stop) of each whole frame in a buffer of frames this node encoded."""
    spans = []
    pos = 0
    end = len(data)
    while end - pos >= HEADER_SIZE:
        stop = pos + HEADER_SIZE + HEADER.unpack_from(data, pos)[0]
        if stop > end:
            break
        spans.append((pos, stop))
        pos = stop
    return spans
