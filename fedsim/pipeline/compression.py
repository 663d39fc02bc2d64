"""Update compression as a pipeline stage, and the 8-bit broadcast model.

:class:`Compress` encodes each update of a stack, decodes it and passes the decoded rows on:
they are exactly what the server receives, and the upload costs the encoding's bytes
(:mod:`fedsim.pipeline.encoding`). With error feedback (Stich et al. 2018; Karimireddy et
al. 2019) a client compresses its update plus the error it left out before, and keeps the new
error in the client-state store (float32, checkpointed with the run).

Compression is the first stage; the privacy stages follow it. Under central DP a client thus
compresses, then clips what it sends (clipping only rescales, so the bytes do not change and
the noised sum still has sensitivity ``clip_norm``), and the server adds the noise.
"""

from __future__ import annotations

import numpy as np

from fedsim.config import CompressionConfig
from fedsim.pipeline.base import Stage, UpdateBatch
from fedsim.pipeline.encoding import Encoding, Int8, encoding

RESIDUAL = "residual"


class Compress(Stage):
    """Encode and decode each update; optionally with a per-client error-feedback residual."""

    def __init__(self, enc: Encoding, error_feedback: bool = False) -> None:
        self.enc, self.error_feedback = enc, error_feedback
        self.state = {RESIDUAL: -1} if error_feedback else {}

    def apply(self, rows: np.ndarray, batch: UpdateBatch) -> np.ndarray:
        if self.error_feedback:
            rows = rows + batch.state[RESIDUAL]
        fields = self.enc.encode(rows, batch.seed, batch.round, batch.ids)
        sent = self.enc.decode(fields, rows.shape[1])
        if self.error_feedback:
            batch.state[RESIDUAL] = (rows - sent).astype(np.float32)
        return sent

    def upload_bytes(self, num_parameters: int, nbytes: int) -> int:
        return self.enc.nbytes(num_parameters)


def upload_stages(opts: CompressionConfig) -> tuple[Stage, ...]:
    """The run-wide stages of ``[compression]`` (none for ``up = "none"``).

    Random-k is scaled by P / k (unbiased) except with error feedback, which needs a
    contractive compressor: there it sends the drawn values as they are.
    """
    if opts.up == "none":
        return ()
    enc = encoding(opts.up, opts.bits, opts.fraction, scaled=not opts.error_feedback)
    return (Compress(enc, opts.error_feedback),)


class Broadcast:
    """The model as clients receive it: as it is, or int8-encoded (``down = "int8"``)."""

    def __init__(self, down: str) -> None:
        self.enc = Int8() if down == "int8" else None

    def model(self, w: np.ndarray) -> np.ndarray:
        """What clients train from: ``w`` itself, or its int8 round trip (same dtype)."""
        if self.enc is None:
            return w
        fields = self.enc.encode(w[None].astype(np.float64))
        return self.enc.decode(fields, len(w))[0].astype(w.dtype)

    def nbytes(self, model_bytes: int, num_parameters: int) -> int:
        """Bytes of the model on the wire."""
        return model_bytes if self.enc is None else self.enc.nbytes(num_parameters)
