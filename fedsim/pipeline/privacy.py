"""Privacy as pipeline stages: clipping, client noise, sample weights and SecAgg masking.

The order is the one DP-FedAvg with secure aggregation needs: clip each update (its L2
sensitivity), add the client's own noise (local DP, or its share of the central noise under
distributed DP), then quantise and mask. With secure aggregation and no DP, each update is
multiplied by its sample count so that the masked sum still gives FedAvg's weighted mean.
"""

from __future__ import annotations

import numpy as np

from fedsim.pipeline.base import Pipeline, Stage, UpdateBatch
from fedsim.privacy.dp import client_noise, clip_updates
from fedsim.privacy.purpose import PrivacyPurpose
from fedsim.privacy.rounds import ClientStep
from fedsim.privacy.secagg import SecAggRound, mask_input, quantize
from fedsim.privacy.secagg_messages import masked_input_bytes

UNCLIPPED = "unclipped"


class Clip(Stage):
    """Scale each update to L2 norm at most ``clip_norm``; count those already within it."""

    weighs = True  # DP-FedAvg weighs every client 1 (a sample count would break the bound)

    def __init__(self, clip_norm: float) -> None:
        self.clip_norm = clip_norm

    def apply(self, rows: np.ndarray, batch: UpdateBatch) -> np.ndarray:
        clipped, norms = clip_updates(rows, self.clip_norm)
        batch.counts[UNCLIPPED] = (norms <= self.clip_norm) & ~batch.rejected
        return clipped


class ClientNoise(Stage):
    """Each client adds Gaussian noise keyed by its id (local or distributed DP)."""

    def __init__(self, stddev: float, purpose: int) -> None:
        self.stddev, self.purpose = stddev, purpose

    def apply(self, rows: np.ndarray, batch: UpdateBatch) -> np.ndarray:
        noise = client_noise(
            batch.ids, rows.shape[1], self.stddev, batch.seed, batch.round, self.purpose
        )
        return rows + noise


class SampleWeight(Stage):
    """Multiply each update by its sample count (FedAvg's weights inside a masked sum)."""

    weighs = True

    def apply(self, rows: np.ndarray, batch: UpdateBatch) -> np.ndarray:
        return rows * batch.num_samples


class SecAggMask(Stage):
    """Quantise to ``bits``-bit fixed point in [-clip_range, clip_range] and add the masks."""

    modular = True

    def __init__(self, rnd: SecAggRound, clip_range: float) -> None:
        self.rnd, self.clip_range = rnd, clip_range

    def apply(self, rows: np.ndarray, batch: UpdateBatch) -> np.ndarray:
        rnd = self.rnd
        fixed = quantize(rows, rnd.bits, self.clip_range, rnd.num_clients)
        return np.stack(
            [mask_input(rnd, rnd.index(int(c)), x) for c, x in zip(batch.ids, fixed, strict=True)]
        )

    def upload_bytes(self, num_parameters: int, nbytes: int) -> int:
        return masked_input_bytes(num_parameters, self.rnd.bits)


def privacy_pipeline(step: ClientStep | None) -> Pipeline:
    """The stages of one round's privacy step (empty without ``[privacy]``)."""
    if step is None:
        return Pipeline()
    stages: list[Stage] = []
    if step.clip_norm > 0:
        stages.append(Clip(step.clip_norm))
        if step.local_stddev > 0:
            stages.append(ClientNoise(step.local_stddev, PrivacyPurpose.LOCAL_NOISE))
        if step.distributed_stddev > 0:
            stages.append(ClientNoise(step.distributed_stddev, PrivacyPurpose.DISTRIBUTED_NOISE))
    else:
        stages.append(SampleWeight())
    if step.secagg is not None:
        stages.append(SecAggMask(step.secagg, step.clip_range))
    return Pipeline(tuple(stages))
