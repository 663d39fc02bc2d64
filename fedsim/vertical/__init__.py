"""Vertical federated learning: parties hold different features of the same people.

ID alignment by private set intersection (:mod:`.psi`), training by a split neural network
(:mod:`.splitnn`) or hetero logistic regression under Paillier encryption (:mod:`.hetero_lr`),
on the simulated clock with bytes per party (:mod:`.costs`), recorded like horizontal runs
(:mod:`.records`). Federated transfer learning (parties with different features and few
shared people) reuses those pieces: :mod:`.transfer` runs it, :mod:`.ftl` is the model.
Only the runner imports this package, through ``config.KIND_MODULES``.
"""
