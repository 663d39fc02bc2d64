"""Update encodings: fixed wire layouts, vectorised encode/decode over a stack of rows.

Each encoding lays one update out as a header followed by fixed-size fields; the size of
every field depends on the parameter count alone, never on the values, so the bytes on the
wire are known before a round is run (the clock plans with them). Where a natural encoding
has a data-dependent size (Elias-coded QSGD levels, a sparse update whose cheaper index form
depends on the values) the fixed-width form is used. ``nbytes`` is the length of
:func:`pack`'s output, which a test checks byte for byte.

Formats (P parameters; every float is float32; bit fields are packed big-endian per byte):

- ``int8``: one scale per block of :data:`INT8_BLOCK` values (``max|x| / 127``) and one int8
  code per value; decoded ``code * scale``.
- ``qsgd`` (Alistarh et al. 2017): one L2 norm per bucket of :data:`QSGD_BUCKET` values and,
  per value, a sign bit and a level in ``0..s`` with ``s = 2^(bits-1) - 1``, drawn by
  stochastic rounding so that the decoded ``norm * sign * level / s`` is unbiased.
- ``topk``: the ``k`` values of largest magnitude and their positions, as indices (uint16
  when P <= 65536, else uint32) or as a P-bit bitmap, whichever is smaller for (k, P).
- ``randk``: ``k`` values at positions drawn from a 64-bit mask seed sent with them (the
  server regenerates the positions); scaled by ``P / k`` (unbiased) unless told otherwise.
- ``sign`` (scaled signSGD, Karimireddy et al. 2019): one scale ``||x||_1 / P`` and one
  sign bit per value; decoded ``+-scale``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fedsim.rng import Purpose, generator

#: Element count (uint32), format code (uint8), bits per value (uint8), block size (uint16).
HEADER_BYTES = 8
INT8_BLOCK = 256
QSGD_BUCKET = 512


@dataclass(frozen=True)
class Field:
    """One fixed-size field of an encoded row."""

    name: str
    dtype: str
    count: int

    @property
    def nbytes(self) -> int:
        return np.dtype(self.dtype).itemsize * self.count


class Encoding(ABC):
    """An update format: its fields, and encode/decode over a stack of float64 rows."""

    code: int  # the format code in the header
    bits_per_value: int = 0
    block: int = 0  # values per scale or norm (0: one per update)

    @abstractmethod
    def fields(self, num_parameters: int) -> tuple[Field, ...]:
        """The row's fields after the header, in wire order."""

    @abstractmethod
    def encode(
        self, rows: np.ndarray, seed: int, round_: int, ids: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Each field as a (C, count) array of its dtype; randomness keyed by client id."""

    @abstractmethod
    def decode(self, fields: dict[str, np.ndarray], num_parameters: int) -> np.ndarray:
        """The (C, P) float64 rows the fields stand for."""

    def nbytes(self, num_parameters: int) -> int:
        """Bytes of one encoded update, header included."""
        return HEADER_BYTES + sum(f.nbytes for f in self.fields(num_parameters))

    def header(self, num_parameters: int) -> bytes:
        return (
            np.array([num_parameters], "<u4").tobytes()
            + bytes([self.code, self.bits_per_value])
            + np.array([self.block], "<u2").tobytes()
        )


def pack(enc: Encoding, fields: dict[str, np.ndarray], row: int, num_parameters: int) -> bytes:
    """One client's update as the bytes it sends."""
    parts = [enc.header(num_parameters)]
    for f in enc.fields(num_parameters):
        parts.append(np.ascontiguousarray(fields[f.name][row], dtype=f.dtype).tobytes())
    return b"".join(parts)


def unpack(enc: Encoding, data: bytes, num_parameters: int) -> dict[str, np.ndarray]:
    """The fields of one packed update, each as a (1, count) array."""
    if len(data) != enc.nbytes(num_parameters) or data[:HEADER_BYTES] != enc.header(num_parameters):
        raise ValueError("not an update of this encoding and size")
    out, at = {}, HEADER_BYTES
    for f in enc.fields(num_parameters):
        out[f.name] = np.frombuffer(data, dtype=f.dtype, count=f.count, offset=at)[None]
        at += f.nbytes
    return out


def _blocks(rows: np.ndarray, block: int) -> np.ndarray:
    """(C, nb, block) view of rows zero-padded to a whole number of blocks."""
    c, p = rows.shape
    nb = -(-p // block)
    padded = np.zeros((c, nb * block), dtype=np.float64)
    padded[:, :p] = rows
    return padded.reshape(c, nb, block)


def _pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """(C, P) unsigned ints below 2^bits as (C, ceil(P * bits / 8)) uint8."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    planes = (values.astype(np.uint8)[..., None] >> shifts) & 1
    return np.packbits(planes.reshape(len(values), -1), axis=1)


def _unpack_bits(packed: np.ndarray, bits: int, p: int) -> np.ndarray:
    planes = np.unpackbits(packed, axis=1, count=p * bits).reshape(len(packed), p, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    return planes.astype(np.int64) @ weights


class Int8(Encoding):
    code, bits_per_value, block = 1, 8, INT8_BLOCK

    def fields(self, num_parameters: int) -> tuple[Field, ...]:
        nb = -(-num_parameters // self.block)
        return Field("scales", "<f4", nb), Field("codes", "i1", num_parameters)

    def encode(
        self, rows: np.ndarray, seed: int = 0, round_: int = 0, ids: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        b = _blocks(rows, self.block)
        scales = (np.abs(b).max(axis=2) / 127.0).astype(np.float32)
        safe = np.where(scales > 0, scales, 1.0).astype(np.float64)
        codes = np.clip(np.rint(b / safe[..., None]), -127, 127).astype(np.int8)
        return {"scales": scales, "codes": codes.reshape(len(rows), -1)[:, : rows.shape[1]]}

    def decode(self, fields: dict[str, np.ndarray], num_parameters: int) -> np.ndarray:
        scale = np.repeat(fields["scales"].astype(np.float64), self.block, axis=1)
        return fields["codes"].astype(np.float64) * scale[:, :num_parameters]


class QSGD(Encoding):
    code, block = 2, QSGD_BUCKET

    def __init__(self, bits: int) -> None:
        self.bits_per_value = bits
        self.levels = (1 << (bits - 1)) - 1

    def fields(self, num_parameters: int) -> tuple[Field, ...]:
        nb = -(-num_parameters // self.block)
        packed = -(-num_parameters * self.bits_per_value // 8)
        return Field("norms", "<f4", nb), Field("codes", "u1", packed)

    def encode(
        self, rows: np.ndarray, seed: int, round_: int, ids: np.ndarray
    ) -> dict[str, np.ndarray]:
        c, p = rows.shape
        b = _blocks(rows, self.block)
        exact = np.sqrt(np.einsum("cnk,cnk->cn", b, b))
        norms = exact.astype(np.float32)
        # Round the stored norm up, so that |x| / norm <= 1 and every level fits.
        low = norms.astype(np.float64) < exact
        norms[low] = np.nextafter(norms[low], np.float32(np.inf))
        safe = np.where(norms > 0, norms, 1.0).astype(np.float64)
        ratio = (np.abs(b) / safe[..., None] * self.levels).reshape(c, -1)[:, :p]
        floor = np.floor(ratio)
        u = np.stack([generator(seed, Purpose.QSGD, round_, int(i)).random(p) for i in ids])
        level = np.minimum(floor + (u < ratio - floor), self.levels).astype(np.int64)
        negative = (rows < 0).astype(np.int64)
        codes = (negative << (self.bits_per_value - 1)) | level
        return {"norms": norms, "codes": _pack_bits(codes, self.bits_per_value)}

    def decode(self, fields: dict[str, np.ndarray], num_parameters: int) -> np.ndarray:
        codes = _unpack_bits(fields["codes"], self.bits_per_value, num_parameters)
        level = codes & self.levels
        sign = 1.0 - 2.0 * (codes >> (self.bits_per_value - 1))
        norm = np.repeat(fields["norms"].astype(np.float64), self.block, axis=1)
        return norm[:, :num_parameters] * sign * (level / self.levels)


def sparse_count(fraction: float, num_parameters: int) -> int:
    """Values a sparse update keeps: ``round(fraction * P)``, at least 1 and at most P."""
    return min(num_parameters, max(1, round(fraction * num_parameters)))


class _Sparse(Encoding):
    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.bits_per_value = 32

    def _index_dtype(self, num_parameters: int) -> str:
        return "<u2" if num_parameters <= 1 << 16 else "<u4"

    def _decode_values(
        self, idx: np.ndarray, values: np.ndarray, num_parameters: int
    ) -> np.ndarray:
        out = np.zeros((len(values), num_parameters), dtype=np.float64)
        np.put_along_axis(out, idx, values.astype(np.float64), axis=1)
        return out


class TopK(_Sparse):
    code = 3

    def bitmap(self, num_parameters: int) -> bool:
        """Whether positions go as a P-bit bitmap (else as k indices): the smaller form."""
        k = sparse_count(self.fraction, num_parameters)
        index_bytes = np.dtype(self._index_dtype(num_parameters)).itemsize * k
        return -(-num_parameters // 8) < index_bytes

    def fields(self, num_parameters: int) -> tuple[Field, ...]:
        k = sparse_count(self.fraction, num_parameters)
        values = Field("values", "<f4", k)
        if self.bitmap(num_parameters):
            return Field("bitmap", "u1", -(-num_parameters // 8)), values
        return Field("indices", self._index_dtype(num_parameters), k), values

    def encode(
        self, rows: np.ndarray, seed: int = 0, round_: int = 0, ids: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        p = rows.shape[1]
        k = sparse_count(self.fraction, p)
        idx = np.sort(np.argpartition(-np.abs(rows), k - 1, axis=1)[:, :k], axis=1)
        values = np.take_along_axis(rows, idx, axis=1).astype(np.float32)
        if self.bitmap(p):
            mask = np.zeros(rows.shape, dtype=bool)
            np.put_along_axis(mask, idx, True, axis=1)
            return {"bitmap": np.packbits(mask, axis=1), "values": values}
        return {"indices": idx.astype(self._index_dtype(p)), "values": values}

    def decode(self, fields: dict[str, np.ndarray], num_parameters: int) -> np.ndarray:
        if "bitmap" in fields:
            mask = np.unpackbits(fields["bitmap"], axis=1, count=num_parameters).astype(bool)
            k = fields["values"].shape[1]
            idx = np.nonzero(mask)[1].reshape(len(mask), k)  # row-major: ascending per row
        else:
            idx = fields["indices"].astype(np.int64)
        return self._decode_values(idx, fields["values"], num_parameters)


class RandK(_Sparse):
    code = 4

    def __init__(self, fraction: float, scaled: bool = True) -> None:
        super().__init__(fraction)
        self.scaled = scaled

    def fields(self, num_parameters: int) -> tuple[Field, ...]:
        k = sparse_count(self.fraction, num_parameters)
        return Field("mask_seed", "<u8", 1), Field("values", "<f4", k)

    def positions(self, mask_seeds: np.ndarray, num_parameters: int) -> np.ndarray:
        """(C, k) sorted positions of each row's mask, from its seed alone."""
        k = sparse_count(self.fraction, num_parameters)
        return np.stack(
            [
                np.sort(generator(int(s)).choice(num_parameters, k, replace=False))
                for s in mask_seeds[:, 0]
            ]
        )

    def encode(
        self, rows: np.ndarray, seed: int, round_: int, ids: np.ndarray
    ) -> dict[str, np.ndarray]:
        p = rows.shape[1]
        seeds = np.array(
            [[generator(seed, Purpose.RANDK, round_, int(i)).integers(1 << 63)] for i in ids],
            dtype=np.uint64,
        )
        idx = self.positions(seeds, p)
        scale = p / idx.shape[1] if self.scaled else 1.0
        values = (np.take_along_axis(rows, idx, axis=1) * scale).astype(np.float32)
        return {"mask_seed": seeds, "values": values}

    def decode(self, fields: dict[str, np.ndarray], num_parameters: int) -> np.ndarray:
        idx = self.positions(fields["mask_seed"], num_parameters)
        return self._decode_values(idx, fields["values"], num_parameters)


class Sign(Encoding):
    code, bits_per_value = 5, 1

    def fields(self, num_parameters: int) -> tuple[Field, ...]:
        return Field("scale", "<f4", 1), Field("signs", "u1", -(-num_parameters // 8))

    def encode(
        self, rows: np.ndarray, seed: int = 0, round_: int = 0, ids: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        scale = np.abs(rows).mean(axis=1, keepdims=True).astype(np.float32)
        return {"scale": scale, "signs": np.packbits(rows < 0, axis=1)}

    def decode(self, fields: dict[str, np.ndarray], num_parameters: int) -> np.ndarray:
        negative = np.unpackbits(fields["signs"], axis=1, count=num_parameters)
        return fields["scale"].astype(np.float64) * (1.0 - 2.0 * negative)


def encoding(name: str, bits: int = 8, fraction: float = 0.01, scaled: bool = True) -> Encoding:
    """The encoding called ``name`` (int8, qsgd, topk, randk, sign)."""
    if name == "int8":
        return Int8()
    if name == "qsgd":
        return QSGD(bits)
    if name == "topk":
        return TopK(fraction)
    if name == "randk":
        return RandK(fraction, scaled)
    if name == "sign":
        return Sign()
    raise ValueError(f"unknown encoding {name!r}")
