"""The ``[transfer]`` section: the two parties, the generated task and the FTL training."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsim.config import Dist
from fedsim.options import at_least, check, in_range, non_negative, positive
from fedsim.vertical.config import _POSITIVE_DIST, REFERENCE_SPEED


@dataclass(frozen=True)
class TransferParty:
    """A party: its name, its feature count, its machine and its link."""

    name: str
    features: int = field(metadata=check(positive))
    speed: Dist = field(default=Dist(value=REFERENCE_SPEED), metadata=_POSITIVE_DIST)
    bandwidth: Dist = field(default=Dist(value=1.25e7), metadata=_POSITIVE_DIST)
    # A CSV of the party's own people instead of the generated task (both parties or none):
    # column ``id``, column ``label`` (0/1 or -1/1), every other column a numeric feature.
    file: str = ""


@dataclass(frozen=True)
class SourceParty(TransferParty):
    """Party A: many samples, with the labels."""

    name: str = "source"
    features: int = field(default=20, metadata=check(positive))


@dataclass(frozen=True)
class TargetParty(TransferParty):
    """Party B: other features, no labels."""

    name: str = "target"
    features: int = field(default=10, metadata=check(positive))


@dataclass(frozen=True)
class TransferConfig:
    """Settings of a transfer run; see the README section "Federated transfer learning"."""

    # Samples only the source holds, samples both hold (the overlap), samples only the
    # target holds (the ones it wants labels for: the test set).
    source_only: int = field(default=2000, metadata=check(non_negative))
    overlap: int = field(default=100, metadata=check(at_least(2)))
    target_only: int = field(default=1000, metadata=check(at_least(2)))
    # The generated task (fedsim/vertical/transfer_data.py): latent factors per sample, the
    # features' noise deviation, and the probability that a label is flipped.
    latent_dim: int = field(default=4, metadata=check(positive))
    noise: float = field(default=0.1, metadata=check(non_negative))
    label_flip: float = field(default=0.15, metadata=check(in_range(0, 0.5, hi_open=True)))
    # Training: epochs over the overlap in minibatches, Adam.
    epochs: int = field(default=100, metadata=check(positive))
    batch_size: int = field(default=32, metadata=check(positive))
    learning_rate: float = field(default=0.01, metadata=check(positive))
    # Encoders: hidden units, width d of the shared space.
    hidden: int = field(default=32, metadata=check(positive))
    embedding: int = field(default=8, metadata=check(positive))
    # Weight of the alignment loss (gamma) and of the L2 penalty (lambda), Liu et al. eq. 6.
    gamma: float = field(default=1.0, metadata=check(non_negative))
    l2: float = field(default=1e-3, metadata=check(non_negative))
    # Find the overlap by private set intersection (round 0); false: the IDs are known.
    psi: bool = True
    # Seconds of one 2048-bit modular multiplication at REFERENCE_SPEED (PSI cost model).
    mulmod_s: float = field(default=1.4e-6, metadata=check(positive))
    source: SourceParty = SourceParty()
    target: TargetParty = TargetParty()

    def validate(self) -> str | None:
        for key, p in (("source", self.source), ("target", self.target)):
            if not p.name or not p.name.replace("_", "").isalnum():
                return f"{key}.name: {p.name!r} must be letters, digits and '_'"
        if bool(self.source.file) != bool(self.target.file):
            missing = "target" if self.source.file else "source"
            return f"{missing}.file: needed too when the other party's data is a file"
        if self.source.name == self.target.name:
            return f"target.name: both parties are named {self.source.name!r}"
        return None

    @property
    def parties(self) -> tuple[TransferParty, TransferParty]:
        """Source first: it holds the labels, as the active party of a vertical run."""
        return (self.source, self.target)
