"""Stacks of clients: sized by the model's parameter bytes, cut evenly, never changing results."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import small_config

import fedsim
from fedsim.models.base import STACK_BYTES, Model
from fedsim.models.cnn import Cnn
from fedsim.models.mlp import DenseNetwork
from fedsim.models.softmax import SoftmaxRegression
from fedsim.runtime.work import stacks


def _sizes(cuts: list[slice]) -> list[int]:
    return [s.stop - s.start for s in cuts]


def test_stacks_cut_each_schedule_run_into_near_equal_parts_within_max_stack():
    sizes = np.array([5] * 9 + [6] * 3 + [7])
    epochs = np.ones(len(sizes), dtype=np.int64)
    cuts = stacks(sizes, epochs, 4)
    assert _sizes(cuts) == [3, 3, 3, 3, 1]  # 9 at most 4 a stack: 3, 3, 3 (not 4, 4, 1)
    assert [c.start for c in cuts] == [0, 3, 6, 9, 12]  # contiguous, in the given order
    for c in cuts:  # one schedule per stack
        assert len(set(sizes[c].tolist())) == 1
    assert _sizes(stacks(np.full(10, 600), np.ones(10, dtype=np.int64), 5)) == [5, 5]
    assert _sizes(stacks(np.full(3, 60), np.array([1, 2, 2]), 64)) == [1, 2]
    assert stacks(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 8) == []


def test_stacks_hold_at_most_stack_bytes_of_parameters_and_at_least_one_client():
    two_nn = DenseNetwork((28, 28), 10, (200, 200))
    assert two_nn.num_parameters == 199_210
    assert two_nn.max_stack == STACK_BYTES // (4 * 199_210) == 5
    # A small model keeps the default stack: its kernels are call-bound, not memory-bound.
    assert SoftmaxRegression((60,), 10, bias=False).max_stack == Model.max_stack == 64
    wide = DenseNetwork((1024,), 10, (2048,))
    assert 4 * wide.num_parameters > STACK_BYTES and wide.max_stack == 1
    # The CNN computes its clients one at a time: a client's 6.7 MB train alone, in cache.
    cnn = Cnn((28, 28), 10)
    assert cnn.num_parameters == 1_663_370 and cnn.max_stack == 1


@pytest.mark.parametrize("max_stack", [1, 3])
def test_run_is_bitwise_the_same_whatever_the_stack_size(monkeypatch, max_stack):
    cfg = small_config("model.name='mlp'", "model.hidden=[16]", "server.rounds=2")
    default = fedsim.run(cfg)
    monkeypatch.setattr(DenseNetwork, "max_stack", max_stack)
    other = fedsim.run(cfg)
    assert other.rounds["completed"].sum() > 3  # stacks of several clients were cut
    np.testing.assert_array_equal(default.model, other.model)
    np.testing.assert_array_equal(default.rounds["train_loss"], other.rounds["train_loss"])


def _chunk_results():
    from fedsim.runner import prepare
    from fedsim.runtime.server import round_context
    from fedsim.runtime.work import make_chunks, train_chunks, train_spec

    cfg = small_config("model.name='mlp'", "model.hidden=[8]")
    exp = prepare(cfg)
    ids = np.arange(0, 60, 2)
    sizes = exp.dataset.client_sizes()[ids]
    chunks = make_chunks(ids, sizes, np.ones(len(ids), dtype=np.int64), 6)
    spec = train_spec(cfg, exp.strategy)
    w0 = exp.model.init(0)
    return train_chunks(exp.model, exp.dataset, w0, spec, round_context(cfg, 1), chunks)


def _server_sum(results) -> np.ndarray:
    acc = np.zeros_like(results[0].weighted_sum)  # as the server adds them, in chunk order
    for r in sorted(results, key=lambda r: r.index):
        acc += r.weighted_sum
    return acc


def test_folding_the_leading_chunks_gives_the_server_the_same_sum_bits_and_clients():
    from fedsim.runtime.work import fold_leading

    results = _chunk_results()
    assert len(results) == 6
    folded = fold_leading(results[::-1])  # a worker's results in any order
    assert len(folded) == 1 and folded[0].index == 0
    np.testing.assert_array_equal(_server_sum(folded), _server_sum(results))
    assert folded[0].weight == sum(r.weight for r in results)
    np.testing.assert_array_equal(
        folded[0].client_ids, np.concatenate([r.client_ids for r in results])
    )
    np.testing.assert_array_equal(
        folded[0].train_loss, np.concatenate([r.train_loss for r in results])
    )
    # A worker holding chunks 0, 1, 3 and 4 folds 0 and 1 only: chunk 2 comes between.
    some = fold_leading([results[i] for i in (4, 0, 3, 1)])
    assert [r.index for r in some] == [0, 3, 4]
    rest = [results[2], results[5], *some]  # the other worker's chunks
    np.testing.assert_array_equal(_server_sum(rest), _server_sum(results))
    # Without chunk 0 nothing can be folded.
    assert [r.index for r in fold_leading(results[1:])] == [1, 2, 3, 4, 5]
