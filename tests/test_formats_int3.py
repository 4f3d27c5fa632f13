"""int3 (python/qkernels/formats/int3.py) against docs/formats.md: its 2+1 bit-plane packing, the
quality floors and the input checks of its layout. RTN, the MSE search, the edge cases and input
checks it shares with int4 are in test_formats_grouped.py."""

from __future__ import annotations

import pytest
import torch
from formats_common import RAGGED_SHAPES, bits_of, check_sqnr_floor, every_byte_at_every_position
from qkernels.formats import int3

# --- packing -------------------------------------------------------------------------------------


def spec_chunk_bytes(codes: list[int]) -> list[int]:
    """docs/formats.md's 12 bytes for 32 codes: byte j (0..7) bits 2t..2t+1 = bits 0..1 of element
    j + 8t; bytes 8..11 a little-endian uint32 whose bit i is bit 2 of element i."""
    out = [0] * 12
    for i, c in enumerate(codes):
        out[i % 8] |= (c & 3) << (2 * (i // 8))
        out[8 + i // 8] |= ((c >> 2) & 1) << (i % 8)
    return out


@pytest.mark.parametrize("shape", [*RAGGED_SHAPES, (3, 1), (2, 33), (4, 63)])
def test_pack_unpack_identity(shape):
    n, k = shape
    codes = torch.randint(0, 8, shape, dtype=torch.uint8)
    packed = int3.pack(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (n, int3.packed_row_bytes(k)) == (
        n,
        -(-k // 32) * 12,
    )
    assert torch.equal(int3.unpack(packed, k), codes)
    if k % 32 == 0:  # no padding: every byte pattern is a valid row
        raw = torch.randint(0, 256, (n, k // 32 * 12), dtype=torch.uint8)
        assert torch.equal(int3.pack(int3.unpack(raw, k)), raw)


@pytest.mark.parametrize("shape", [(3, 32), (2, 70), (1, 5)])
def test_pack_layout_bit_by_bit(shape):
    n, k = shape
    codes = torch.randint(0, 8, shape, dtype=torch.uint8)
    packed = int3.pack(codes)
    for r in range(n):
        row = codes[r].tolist() + [0] * (-k % 32)  # the last chunk is padded with code 0
        expected = [b for c in range(0, len(row), 32) for b in spec_chunk_bytes(row[c : c + 32])]
        assert packed[r].tolist() == expected


def test_unpack_every_byte_value_bit_by_bit():
    packed = every_byte_at_every_position(12)
    codes = int3.unpack(packed, 32).long()
    for i in range(32):
        low = bits_of(packed[:, i % 8], 2 * (i // 8), 2)
        high = bits_of(packed[:, 8 + i // 8], i % 8, 1)
        assert torch.equal(codes[:, i], low + 4 * high), i


def test_packed_row_bytes():
    assert [int3.packed_row_bytes(k) for k in (1, 32, 33, 64, 4096)] == [12, 12, 24, 24, 1536]


# --- quality --------------------------------------------------------------------------------------


# Measured SQNR (dB) on the seeded N(0, 1) [512, 1024] weight and on MiniLM's query layer; each floor
# sits about 0.1 dB below.  (symmetric, group, method): (normal floor, minilm floor)
FLOORS = {
    (True, 32, "rtn"): (15.05, 14.9),  # measured 15.178, 15.023
    (True, 64, "rtn"): (14.25, 14.0),  # measured 14.360, 14.105
    (True, 128, "rtn"): (13.55, 13.25),  # measured 13.650, 13.343
    (True, -1, "rtn"): (11.9, 12.05),  # measured 12.022, 12.176
    (False, 32, "rtn"): (15.1, 15.0),  # measured 15.241, 15.111
    (False, 64, "rtn"): (14.1, 13.9),  # measured 14.202, 14.003
    (False, 128, "rtn"): (13.2, 13.0),  # measured 13.329, 13.092
    (False, -1, "rtn"): (11.3, 11.75),  # measured 11.405, 11.866
    (True, 32, "mse"): (15.7, 15.55),  # measured 15.795, 15.647
    (True, 128, "mse"): (14.5, 14.3),  # measured 14.629, 14.393
    (True, -1, "mse"): (14.0, 13.85),  # measured 14.092, 13.985
    (False, 32, "mse"): (15.8, 15.65),  # measured 15.901, 15.783
    (False, 128, "mse"): (14.5, 14.3),  # measured 14.632, 14.422
    (False, -1, "mse"): (14.0, 13.9),  # measured 14.096, 13.998
}


@pytest.mark.parametrize(("symmetric", "group", "method"), list(FLOORS), ids=str)
def test_sqnr_floor(symmetric, group, method):
    check_sqnr_floor(int3, FLOORS[symmetric, group, method], group, symmetric, method)


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(
            lambda: int3.unpack(torch.zeros(2, 11, dtype=torch.uint8), 32),
            ValueError,
            r"packed: expected shape \[N, ceil\(in_features / 32\) \* 12\] = \[2, 12\], got \[2, 11\]",
            id="unpack-short-row",
        ),
        pytest.param(
            lambda: int3.unpack(torch.zeros(2, 12, dtype=torch.uint8), 33),
            ValueError,
            r"packed: expected shape .* = \[2, 24\], got \[2, 12\]",
            id="unpack-partial-chunk",
        ),
        pytest.param(
            lambda: int3.dequantize(torch.zeros(2, 65, dtype=torch.uint8), torch.ones(2, 2), None, 32),
            ValueError,
            r"scales: expected shape \(2, 3\), got \(2, 2\)",
            id="dequantize-odd-k-partial-group",
        ),
    ],
)
def test_bad_layout_inputs_raise_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()
