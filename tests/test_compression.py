"""Update compression: exact decoding, byte counts by hand, QSGD unbiasedness, error feedback."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SMALL, small_config, spawn_run, write

import fedsim
from fedsim import checkpoint
from fedsim.config import CompressionConfig
from fedsim.options import ConfigError
from fedsim.pipeline.base import UpdateBatch
from fedsim.pipeline.compression import RESIDUAL, Broadcast, Compress, upload_stages
from fedsim.pipeline.encoding import QSGD, Int8, RandK, Sign, TopK, encoding, pack, unpack

P = 1000  # parameters of the hand-counted cases
ALL = [Int8(), QSGD(4), QSGD(2), TopK(0.01), TopK(0.3), RandK(0.1), Sign()]


def _rows(c: int = 5, p: int = P, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(c, p))


def _batch(c: int = 5, state: dict | None = None) -> UpdateBatch:
    return UpdateBatch(7, 3, np.arange(10, 10 + c), 20, np.zeros(c, bool), state or {})


@pytest.mark.parametrize("enc", ALL, ids=lambda e: f"{type(e).__name__}")
def test_server_receives_exactly_the_decoded_bytes(enc):
    rows = _rows()
    sent = Compress(enc).apply(rows.copy(), _batch())
    fields = enc.encode(rows, 7, 3, np.arange(10, 15))
    for k in range(len(rows)):
        wire = pack(enc, fields, k, P)
        assert len(wire) == Compress(enc).upload_bytes(P, 4 * P)
        received = enc.decode(unpack(enc, wire, P), P)[0]
        np.testing.assert_array_equal(received, sent[k])


def test_byte_counts_by_hand():
    header = 8
    assert Int8().nbytes(P) == header + 4 * 4 + P  # 4 blocks of 256: one float32 scale each
    assert QSGD(4).nbytes(P) == header + 2 * 4 + P * 4 // 8  # 2 buckets of 512
    assert QSGD(2).nbytes(P) == header + 2 * 4 + P * 2 // 8
    assert TopK(0.01).nbytes(P) == header + 10 * 2 + 10 * 4  # 10 uint16 indices + values
    assert TopK(0.3).nbytes(P) == header + 125 + 300 * 4  # bitmap (125) < 300 indices (600)
    assert TopK(0.01).nbytes(100_000) == header + 1000 * 4 + 1000 * 4  # uint32 indices
    assert RandK(0.1).nbytes(P) == header + 8 + 100 * 4  # the mask seed, then the values
    assert Sign().nbytes(P) == header + 4 + 125
    # The 2NN of the experiments (199,210 parameters): the done-when ratios.
    p, none = 199_210, 4 * 199_210
    assert Int8().nbytes(p) / none <= 0.26
    assert TopK(0.01).nbytes(p) / none <= 0.03


def test_int8_and_topk_decode_within_their_bounds():
    rows = _rows()
    dec = Int8().decode(Int8().encode(rows), P)
    blocks = np.abs(np.pad(rows, ((0, 0), (0, 24)))).reshape(5, 4, 256).max(axis=2)
    assert np.all(np.abs(dec - rows) <= np.repeat(blocks / 254 * 1.0001, 256, axis=1)[:, :P])
    top = TopK(0.01)
    dec = top.decode(top.encode(rows), P)
    assert np.count_nonzero(dec, axis=1).tolist() == [10] * 5
    kth = np.sort(np.abs(rows), axis=1)[:, -10]
    assert np.all(np.abs(dec[dec != 0]) >= np.repeat(kth, 10) * (1 - 1e-7))


@pytest.mark.parametrize("bits", [2, 4])
def test_qsgd_is_unbiased_over_many_draws(bits):
    x = _rows(1, 600, seed=1)
    enc, draws = QSGD(bits), 4000
    total = np.zeros(600)
    for r in range(draws):
        total += enc.decode(enc.encode(x, 5, r, np.array([4])), 600)[0]
    mean = total / draws
    # Per coordinate, |decoded| <= norm of its bucket: the mean's standard error is below
    # norm / sqrt(draws); allow 5 of them.
    norms = np.array([np.linalg.norm(x[0, :512]), np.linalg.norm(x[0, 512:])])
    bound = 5 * np.repeat(norms, [512, 88]) / np.sqrt(draws)
    assert np.all(np.abs(mean - x[0]) <= bound)
    assert np.abs(mean - x[0]).mean() < 0.1 * np.abs(x).mean()


def test_randomised_encodings_are_keyed_by_client_not_by_stack():
    rows = _rows()
    for enc in (QSGD(4), RandK(0.1)):
        whole = enc.decode(enc.encode(rows, 7, 3, np.arange(5)), P)
        alone = enc.decode(enc.encode(rows[3:4], 7, 3, np.array([3])), P)
        np.testing.assert_array_equal(whole[3], alone[0])
        other = enc.decode(enc.encode(rows, 7, 4, np.arange(5)), P)
        assert not np.array_equal(whole, other), "a new round draws anew"


def test_randk_is_unbiased_and_unscaled_with_error_feedback():
    x = _rows(1)
    scaled, plain = RandK(0.1, scaled=True), RandK(0.1, scaled=False)
    fields = scaled.encode(x, 0, 1, np.array([0]))
    dec = scaled.decode(fields, P)[0]
    kept = dec != 0
    np.testing.assert_allclose(dec[kept], (x[0, kept] * 10).astype(np.float32))
    (stage,) = upload_stages(CompressionConfig(up="randk", fraction=0.1, error_feedback=True))
    assert stage.enc.scaled is False and not plain.scaled


def test_error_feedback_keeps_what_was_left_out():
    rows = _rows()
    stage = Compress(TopK(0.01), error_feedback=True)
    assert stage.state == {RESIDUAL: -1}
    residual = np.zeros((5, P), dtype=np.float32)
    batch = _batch(state={RESIDUAL: residual})
    sent = stage.apply(rows.copy(), batch)
    np.testing.assert_array_equal(batch.state[RESIDUAL], (rows - sent).astype(np.float32))
    # Next round the residual is added first: a coordinate left out grows until it is sent.
    again = stage.apply(rows.copy(), _batch(state={RESIDUAL: batch.state[RESIDUAL]}))
    assert not np.array_equal(np.nonzero(again[0])[0], np.nonzero(sent[0])[0])


def test_sign_sends_the_mean_magnitude_with_each_sign():
    rows = _rows()
    dec = Sign().decode(Sign().encode(rows), P)
    scale = np.abs(rows).mean(axis=1, keepdims=True).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(dec, np.where(rows < 0, -scale, scale))


def test_broadcast_int8_quantises_the_model_and_shrinks_the_download():
    w = np.random.default_rng(0).normal(size=P).astype(np.float32)
    down = Broadcast("int8")
    sent = down.model(w)
    assert sent.dtype == np.float32 and not np.array_equal(sent, w)
    assert np.abs(sent - w).max() <= np.abs(w).max() / 254 * 1.001
    assert down.nbytes(4 * P, P) == Int8().nbytes(P)
    assert Broadcast("none").model(w) is w


# --- in runs --------------------------------------------------------------------------------


def test_compression_shrinks_bytes_up_per_client_and_changes_who_straggles():
    plain = fedsim.run(small_config())
    top = fedsim.run(small_config("compression.up='topk'", "compression.fraction=0.01"))
    p = 61 * 10  # the synthetic data's softmax: 60 features + bias, 10 classes
    assert set(plain.clients.bytes_up.unique()) <= {0, 4 * p}
    assert set(top.clients.bytes_up.unique()) <= {0, TopK(0.01).nbytes(p)}
    assert top.rounds.bytes_up.sum() == top.clients.bytes_up.sum()
    # A slow uplink: the float32 update misses the deadline where the sparse one does not.
    slow = ("population.upload_bandwidth=400.0", "server.deadline_s=8.0")
    plain = fedsim.run(small_config(*slow))
    top = fedsim.run(small_config(*slow, "compression.up='topk'", "compression.fraction=0.01"))
    assert top.rounds.stragglers.sum() < plain.rounds.stragglers.sum()
    assert (top.clients.upload_s < plain.clients.upload_s).all()


def test_downlink_int8_shrinks_bytes_down_and_trains_from_the_quantised_model():
    plain = fedsim.run(small_config())
    down = fedsim.run(small_config("compression.down='int8'"))
    p = 61 * 10
    assert down.rounds.bytes_down.iloc[0] == down.rounds.selected.iloc[0] * Int8().nbytes(p)
    assert plain.rounds.bytes_down.iloc[0] == plain.rounds.selected.iloc[0] * 4 * p
    assert not np.array_equal(plain.model, down.model)
    assert abs(down.rounds.test_accuracy.iloc[-1] - plain.rounds.test_accuracy.iloc[-1]) < 0.05


@pytest.mark.parametrize(
    "sets,key",
    [
        (["compression.up='int8'", "privacy.secure_aggregation=true"], "compression.up"),
        (["compression.error_feedback=true"], "compression.error_feedback"),
        (["compression.bits=9"], "compression.bits"),
        (["compression.fraction=0"], "compression.fraction"),
        (["compression.up='gzip'"], "compression.up"),
    ],
)
def test_bad_compression_config_is_a_one_line_error_naming_the_key(sets, key):
    with pytest.raises(ConfigError) as err:
        small_config(*sets)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_compression_with_central_dp_runs_and_local_dp_is_refused():
    dp = ("privacy.enabled=true", "privacy.noise_multiplier=0.5", "privacy.sampling_rate=0.1")
    out = fedsim.run(small_config(*dp, "compression.up='topk'", "compression.fraction=0.1"))
    p = 61 * 10
    assert set(out.clients.bytes_up.unique()) <= {0, TopK(0.1).nbytes(p)}
    with pytest.raises(ConfigError, match="^compression.up"):
        small_config(*dp, "privacy.local_noise_multiplier=1.0", "compression.up='topk'")


def test_error_feedback_changes_the_run_and_is_checkpointed(tmp_path):
    sets = ("compression.up='topk'", "compression.fraction=0.05")
    without = fedsim.run(small_config(*sets))
    out = tmp_path / "ef"
    with_ef = fedsim.run(small_config(*sets, "compression.error_feedback=true"), out_dir=out)
    assert not np.array_equal(without.model, with_ef.model)
    store = checkpoint.load(out).state["server"]["client_state"][RESIDUAL]
    assert len(store["ids"]) > 0 and np.abs(store["rows"]).sum() > 0


EF = ("compression.up='topk'", "compression.fraction=0.05", "compression.error_feedback=true")


def test_error_feedback_identical_for_one_and_two_workers(ray_session):
    one = fedsim.run(small_config(*EF, "runtime.backend='ray'", "runtime.workers=1"))
    two = fedsim.run(small_config(*EF, "runtime.backend='ray'", "runtime.workers=2"))
    local = fedsim.run(small_config(*EF))
    assert np.array_equal(one.model, two.model) and np.array_equal(one.model, local.model)


def test_error_feedback_resumed_after_sigkill_is_identical(tmp_path):
    from test_reliability import LONG, _assert_same_run, _kill_at, _reference

    path = write(tmp_path / "small.toml", SMALL)
    reference = _reference(tmp_path, *LONG, *EF)
    out = tmp_path / "killed"
    sets = [a for o in (*LONG, *EF) for a in ("--set", o)]
    _kill_at(spawn_run(str(path), "--out", str(out), *sets), out / "rounds.csv", 6)
    assert checkpoint.load(out).round < 40
    fedsim.resume(out)
    _assert_same_run(reference, out)


def test_encoding_names_match_the_config_choices():
    for name in ("int8", "qsgd", "topk", "randk", "sign"):
        assert encoding(name).nbytes(P) < 4 * P


def test_error_feedback_by_hand_over_two_rounds():
    # P = 4, k = 1. e <- (delta + e) - topk(delta + e), and what is sent is topk(delta + e).
    stage = Compress(TopK(0.25), error_feedback=True)
    one = UpdateBatch(0, 1, np.array([5]), 10, np.zeros(1, bool), {RESIDUAL: np.zeros((1, 4))})
    sent = stage.apply(np.array([[3.0, -1.0, 0.5, 2.0]]), one)
    np.testing.assert_array_equal(sent, [[3.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(one.state[RESIDUAL], [[0.0, -1.0, 0.5, 2.0]])
    # Next participation: delta + e = [1, -2.5, 0.5, 2.25]; -2.5 is the largest magnitude.
    two = UpdateBatch(0, 9, np.array([5]), 10, np.zeros(1, bool), dict(one.state))
    sent = stage.apply(np.array([[1.0, -1.5, 0.0, 0.25]]), two)
    np.testing.assert_array_equal(sent, [[0.0, -2.5, 0.0, 0.0]])
    np.testing.assert_array_equal(two.state[RESIDUAL], [[1.0, 0.0, 0.5, 2.25]])
    assert two.state[RESIDUAL].dtype == np.float32
    # Over both rounds the server received the deltas' sum minus what is still held back.
    total = np.array([4.0, -2.5, 0.5, 2.25])
    np.testing.assert_array_equal([3.0, -2.5, 0.0, 0.0], total - two.state[RESIDUAL][0])


def test_error_feedback_residual_is_the_weight_delta_and_rejected_clients_keep_theirs():
    from fedsim.pipeline.base import Pipeline
    from fedsim.runner import prepare
    from fedsim.runtime.server import round_context
    from fedsim.runtime.work import make_chunks, train_chunks, train_spec

    cfg = small_config(*EF)
    exp = prepare(cfg)
    ids = np.arange(0, 40, 4)
    sizes = exp.dataset.client_sizes()[ids]
    w0 = exp.model.init(0).astype(np.float64)
    ctx = round_context(cfg, 2)
    old = np.random.default_rng(1).normal(scale=1e-3, size=(len(ids), exp.model.num_parameters))
    old = old.astype(np.float32)
    spec = train_spec(cfg, exp.strategy)
    # Per-client rows: each client's delta w_k - w_global (no pipeline), then its sent row.
    per_client = type(spec)(spec.seed, spec.client, streaming=False)
    one_epoch = np.ones_like(ids)
    (raw,) = train_chunks(
        exp.model, exp.dataset, w0, per_client, ctx, make_chunks(ids, sizes, one_epoch, 1)
    )
    deltas = dict(zip(raw.update_ids.tolist(), raw.updates.astype(np.float64), strict=True))
    (chunk,) = make_chunks(ids, sizes, one_epoch, 1)
    chunk.state[RESIDUAL] = old[np.searchsorted(ids, chunk.client_ids)]
    pipe = Pipeline(upload_stages(cfg.compression))
    (res,) = train_chunks(exp.model, exp.dataset, w0, per_client, ctx, [chunk], pipe)
    for k, cid in enumerate(res.client_ids.tolist()):
        sent = res.updates[list(res.update_ids).index(cid)].astype(np.float64)
        want = deltas[cid] + chunk.state[RESIDUAL][k] - sent
        np.testing.assert_allclose(res.state[RESIDUAL][k], want, rtol=0, atol=1e-6)
    # A bound no update meets: every client is rejected and keeps its residual unchanged.
    strict = type(spec)(spec.seed, spec.client, streaming=False, max_update_norm=1e-12)
    (chunk,) = make_chunks(ids, sizes, one_epoch, 1)
    chunk.state[RESIDUAL] = old[np.searchsorted(ids, chunk.client_ids)].copy()
    (res,) = train_chunks(exp.model, exp.dataset, w0, strict, ctx, [chunk], pipe)
    assert res.rejected.all() and len(res.update_ids) == 0
    np.testing.assert_array_equal(res.state[RESIDUAL], old[np.searchsorted(ids, res.client_ids)])
