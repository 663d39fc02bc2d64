"""The purposes that key fedsim's random streams."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.privacy.purpose import PrivacyPurpose
from fedsim.rng import NORMAL_OFFSET, Purpose, normal, uniform


def test_every_purpose_has_its_own_value_and_normal_never_reuses_another_stream():
    values = [int(p) for p in Purpose] + [int(p) for p in PrivacyPurpose]
    assert len(values) == len(set(values))
    # The purposes at an offset stream are the straggler-epochs draw and the async pick order
    # (kept for their results): normal() refuses the purposes whose second uniform they would
    # be; every other purpose draws.
    shared = {v for v in values if v + NORMAL_OFFSET in values}
    assert shared == {int(Purpose.STRAGGLER), int(Purpose.ASYNC_PICK)}
    ids = np.arange(10)
    with pytest.raises(ValueError, match="STRAGGLER_EPOCHS"):
        normal(0, 1, Purpose.STRAGGLER, ids)
    with pytest.raises(ValueError, match="ASYNC_PICK_ORDER"):
        normal(0, 1, Purpose.ASYNC_PICK, ids)
    for p in set(values) - shared:
        assert normal(0, 1, p, ids).shape == (10,)


def test_normal_draws_from_its_purpose_and_the_offset_stream_only():
    ids = np.arange(1000)
    u1 = uniform(3, 2, Purpose.JITTER, ids)
    u2 = uniform(3, 2, Purpose.JITTER + NORMAL_OFFSET, ids)
    expected = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    np.testing.assert_array_equal(normal(3, 2, Purpose.JITTER, ids), expected)
    z = normal(3, 2, Purpose.DROPOUT, ids)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1
