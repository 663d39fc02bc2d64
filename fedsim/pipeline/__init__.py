"""Per-update stages applied in the workers: clipping, noise, masking, compression."""

from fedsim.pipeline.base import Pipeline, Stage, UpdateBatch

__all__ = ["Pipeline", "Stage", "UpdateBatch"]
