"""Privacy for federated learning: differential privacy and secure aggregation.

- :mod:`fedsim.privacy.dp` — clipping, central / local / distributed Gaussian noise, Poisson
  sampling, adaptive clipping (DP-FedAvg, McMahan et al. 2018; Andrew et al. 2021).
- :mod:`fedsim.privacy.accounting` — epsilon with Google's ``dp-accounting`` (RDP or PLD);
  imported on demand because its scipy stack takes a second to load.
- :mod:`fedsim.privacy.secagg` — secure aggregation (Bonawitz et al. 2017) over the SecAgg+
  neighbour graph (Bell et al. 2020): fixed point, masks, Shamir shares, unmasking.
- :mod:`fedsim.privacy.secagg_messages` — the protocol's messages, bytes and round trips.
- :mod:`fedsim.privacy.config` — the ``[privacy]`` options.
- :mod:`fedsim.privacy.rounds` — the round loop's use of all this: the workers' client step
  and the server's sampling, unmasking, noise and accounting.
"""

from fedsim.privacy.config import PrivacyOptions
from fedsim.privacy.dp import (
    AdaptiveClip,
    central_noise,
    client_noise,
    clip_updates,
    count_unclipped,
    distributed_noise_stddev,
    noisy_average,
    poisson_sample,
    update_noise_multiplier,
)
from fedsim.privacy.purpose import PrivacyPurpose
from fedsim.privacy.secagg import (
    SecAggRound,
    UnmaskResult,
    dequantize,
    mask_input,
    masked_sum,
    quantize,
    setup_round,
    unmask,
)
from fedsim.privacy.secagg_messages import (
    MessageSizes,
    extra_round_trip_s,
    protocol_bytes,
    protocol_round_times,
    run_protocol,
)

__all__ = [
    "AdaptiveClip",
    "MessageSizes",
    "PrivacyOptions",
    "PrivacyPurpose",
    "SecAggRound",
    "UnmaskResult",
    "central_noise",
    "client_noise",
    "clip_updates",
    "count_unclipped",
    "dequantize",
    "distributed_noise_stddev",
    "extra_round_trip_s",
    "mask_input",
    "masked_sum",
    "noisy_average",
    "poisson_sample",
    "protocol_bytes",
    "protocol_round_times",
    "quantize",
    "run_protocol",
    "setup_round",
    "unmask",
    "update_noise_multiplier",
]
