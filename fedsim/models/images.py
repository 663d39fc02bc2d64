"""Image shapes the image models accept, checked once for the numpy and the torch CNN."""

from __future__ import annotations

import math

from fedsim.options import ConfigError


def image_size(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of a single-channel image given as (H, W), (H*W,) square, (1, H, W) or
    (H, W, 1); both sides must be positive multiples of 4 (two 2x2 poolings)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        hw = (math.isqrt(shape[0]),) * 2
    elif len(shape) == 2:
        hw = shape
    elif len(shape) == 3 and shape[0] == 1:
        hw = shape[1:]
    elif len(shape) == 3 and shape[2] == 1:
        hw = shape[:2]
    else:
        raise ConfigError(
            f"model.cnn: needs single-channel images (H, W), (H*W,) or (1, H, W), "
            f"got input shape {shape}"
        )
    if min(hw) <= 0 or hw[0] % 4 or hw[1] % 4:
        raise ConfigError(
            f"model.cnn: image height and width must be positive multiples of 4, got {hw}"
        )
    return hw[0], hw[1]
