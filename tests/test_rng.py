"""The purposes that key fedsim's random streams."""

from __future__ import annotations

import numpy as np

from fedsim.privacy.purpose import PrivacyPurpose
from fedsim.rng import NORMAL_OFFSET, Purpose, normal, uniform


def test_every_purpose_has_its_own_value_below_the_normal_offset():
    values = [int(p) for p in Purpose] + [int(p) for p in PrivacyPurpose]
    assert len(values) == len(set(values))
    assert max(values) < NORMAL_OFFSET
    # So the second uniform of normal() never is another purpose's stream.
    assert not {v + NORMAL_OFFSET for v in values} & set(values)


def test_normal_draws_from_its_purpose_and_the_offset_stream_only():
    ids = np.arange(1000)
    u1 = uniform(3, 2, Purpose.JITTER, ids)
    u2 = uniform(3, 2, Purpose.JITTER + NORMAL_OFFSET, ids)
    expected = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    np.testing.assert_array_equal(normal(3, 2, Purpose.JITTER, ids), expected)
    z = normal(3, 2, Purpose.STRAGGLER, ids)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1
