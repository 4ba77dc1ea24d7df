"""The key hash is XXH64 with seed 0: published vectors, batch == single, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastdyn._hash import KEY_SEED, hash64, hash64_batch

# Published XXH64 vectors (seed 0), covering the <4, <8, <32 and >=32 byte paths.
VECTORS = [
    (b"", 0xEF46DB3751D8E999),
    (b"a", 0xD24EC4F1A98C6E5B),
    (b"abc", 0x44BC2CF5AD770999),
    (b"message digest", 0x066ED728FCEEB3BE),
    (b"abcdefghijklmnopqrstuvwxyz", 0xCFE1F278FA89835C),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 0xAAA46907D3047814),
    (b"1234567890" * 8, 0xE04A477F19EE145D),
]
SEEDED = [(b"", 1, 0xD5AFBA1336A3BE4B), (b"abc", 1, 0xBEA9CA8199328908)]


def test_seed_is_zero():
    assert KEY_SEED == 0


@pytest.mark.parametrize("data,expected", VECTORS)
def test_published_vectors(data, expected):
    assert hash64(data) == expected


@pytest.mark.parametrize("data,seed,expected", SEEDED)
def test_seeded_vectors(data, seed, expected):
    assert hash64(data, seed) == expected


def test_str_is_utf8_and_buffers_accepted():
    assert hash64("héllo") == hash64("héllo".encode())
    assert hash64(bytearray(b"abc")) == hash64(memoryview(b"abc")) == hash64(b"abc")


@given(st.lists(st.binary(max_size=100), max_size=50))
@settings(max_examples=200)
def test_batch_matches_single(keys):
    out = hash64_batch(keys)
    assert out.dtype == np.uint64
    assert out.tolist() == [hash64(k) for k in keys]


@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: not b.endswith(b"\0")),
                min_size=1, max_size=50))
@settings(max_examples=200)
def test_numpy_bytes_array_matches_single(keys):
    arr = np.array(keys, dtype="S")
    assert hash64_batch(arr).tolist() == [hash64(k) for k in keys]
    assert hash64_batch(np.array(keys, dtype=object)).tolist() == [hash64(k) for k in keys]


def test_batch_edge_cases():
    assert hash64_batch([]).shape == (0,)
    assert hash64_batch(np.array([], dtype="S4")).shape == (0,)
    assert hash64_batch(iter([b"a", "b"])).tolist() == [hash64(b"a"), hash64(b"b")]


@pytest.mark.parametrize("bad", [1, None, 2.5, [b"a"]])
def test_bad_key_type(bad):
    with pytest.raises(TypeError, match="key must be bytes or str"):
        hash64(bad)
    with pytest.raises(TypeError, match="key must be bytes or str"):
        hash64_batch([b"ok", bad])


def test_bad_array_dtype():
    with pytest.raises(TypeError, match="dtype S or object"):
        hash64_batch(np.arange(3))
