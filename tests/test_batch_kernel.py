"""Batch-vectorised kernel (lanes innermost): same results as the per-member kernel, divergence
per lane, the polynomial exponential, and packed SIMD instructions in the compiled code."""
import math

import numpy as np
import pytest

from neurotwin_dash.models import MODELS, get_model
from neurotwin_dash.models import _batch_kernel
from neurotwin_dash.models._kernel import (cos_sin_turn, counter_noise, exp, exp32, exp_fast, log_unit,
                                            model_tag, philox4x32)
from neurotwin_dash.simulate import Drive, SimulationError, simulate

from kernel_agreement import assert_recorded_close

N_BATCH = 10  # two blocks of 8 lanes, the second padded


def _both(**kw):
    return simulate(kernel="batch", **kw), simulate(kernel="member", **kw)


def _force_vectors(monkeypatch, k):
    """Make every batch run in blocks of ``k`` vectors of lanes, whatever ``block_width`` would pick."""
    monkeypatch.setattr(_batch_kernel, "block_width", lambda m, dtype, n, t: k * _batch_kernel.lanes_of(dtype))


def _blocks_made(monkeypatch):
    """A list that collects every :class:`BatchBlocks` built from now on."""
    made = []
    orig = _batch_kernel.BatchBlocks.__init__

    def spy(self, *args, **kw):
        orig(self, *args, **kw)
        made.append(self)
    monkeypatch.setattr(_batch_kernel.BatchBlocks, "__init__", spy)
    return made


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("model", list(MODELS))
def test_batch_kernel_equals_member_kernel(model, method):
    mod = get_model(model)
    rng = np.random.default_rng(0)
    # per-member membrane drive (its own map for every member) and a shared rate drive
    drive = [Drive(rng.uniform(0.0, 1.0, (N_BATCH, 76)), lambda t: np.cos(2 * np.pi * 10 * t), "membrane"),
             Drive(np.full(76, 5.0 if model != "wilson_cowan" else 0.1), lambda t: t > 0.01, "rate")]
    record = list(mod.OUTPUTS) + [mod.STATES[mod.NOISE_STATES[0]]]
    kw = dict(model=model, connectome="tvb76", duration_s=0.05, method=method, drive=drive, record=record,
              params={"coupling": np.linspace(0.0, 4.0, N_BATCH)}, seed=list(range(N_BATCH)))
    fast, ref = _both(**kw)
    assert not ref.diverged.any()
    np.testing.assert_array_equal(fast.diverged.values, ref.diverged.values)
    assert_recorded_close(fast, ref, record, what=f"{model}.")


@pytest.mark.parametrize("vectors", [1, 2])
def test_diverging_member_is_flagged_and_leaves_the_other_lanes_alone(vectors, monkeypatch):
    _force_vectors(monkeypatch, vectors)     # blocks of 8 (the default here) and of 16 lanes
    # Euler is unstable for Wendling's fast synapse when g·dt > 2 (g = 1000 1/s at dt = 2.5 ms)
    g = np.full(N_BATCH, 350.0)
    g[[2, 9]] = 1000.0
    kw = dict(model="wendling", connectome="tvb76", duration_s=1.0, dt_ms=2.5, sample_rate_hz=100.0,
              seed=list(range(N_BATCH)), params={"g": g})
    fast, ref = _both(**kw)
    assert fast.diverged.values.tolist() == [k in (2, 9) for k in range(N_BATCH)]
    np.testing.assert_array_equal(np.isnan(fast.v_pyr.values), np.isnan(ref.v_pyr.values))
    assert np.isnan(fast.v_pyr.values[2, -1]).all()
    ok = ~fast.diverged.values
    np.testing.assert_allclose(fast.v_pyr.values[ok], ref.v_pyr.values[ok], rtol=0, atol=1e-9)
    # a lane next to the diverging one equals that member run without the diverging members
    calm = simulate(kernel="batch", **{**kw, "seed": [1, 3], "params": {"g": [350.0, 350.0]}})
    np.testing.assert_allclose(fast.v_pyr.values[[1, 3]], calm.v_pyr.values, rtol=0, atol=1e-9)


def test_auto_kernel_needs_shared_delays():
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.01, params={"speed_m_s": [3.0, 5.0]})
    with pytest.raises(SimulationError, match="speed_m_s"):
        simulate(kernel="batch", **kw)
    assert simulate(**kw).v_pyr.shape == (2, 10, 76)        # auto: the per-member kernel
    with pytest.raises(SimulationError, match="kernel"):
        simulate(kernel="lanes", **kw)


def _elementwise(f):
    """A compiled loop applying the scalar numba function ``f`` to every element of an array
    (as the kernels call the exponentials: one element at a time inside a loop)."""
    from numba import njit

    @njit
    def many(a):
        out = np.empty_like(a)
        for k in range(a.size):
            out[k] = f(a[k])
        return out
    return many


def test_polynomial_exp_matches_libm_to_1e_15():
    many = _elementwise(exp)
    x = np.concatenate([np.linspace(-708.0, 709.7, 400_001), np.random.default_rng(1).uniform(-40, 40, 100_000)])
    rel = np.abs(many(x) / np.exp(x) - 1.0)
    assert rel.max() <= 1e-15
    edge = many(np.array([np.nan, np.inf, -np.inf, 710.0, -746.0, -740.0, 0.0]))
    assert np.isnan(edge[0]) and edge[1] == np.inf and edge[2] == 0.0 and edge[3] == np.inf
    assert edge[4] == 0.0 and edge[5] == pytest.approx(math.exp(-740.0), rel=1e-12) and edge[6] == 1.0


def test_compiled_lane_loops_use_packed_vector_instructions():
    simulate("jansen_rit", "tvb76", duration_s=0.01, params={"coupling": [1.0, 2.0]}, kernel="batch")
    counts = _batch_kernel.packed_instruction_count(model_tag("jansen_rit"))
    if sum(counts.values()) == 0:
        pytest.skip("kernel loaded from numba's cache: no assembly to inspect")
    assert counts["ymm"] + counts["zmm"] >= 50, counts


def test_huge_page_copy_is_an_aligned_writable_copy_and_the_blocks_use_it(monkeypatch):
    huge = hasattr(__import__("mmap"), "MADV_HUGEPAGE")
    rng = np.random.default_rng(0)
    small = rng.standard_normal((10, 2, 8))     # below the threshold: a plain copy
    c = _batch_kernel.huge_page_copy(small)
    assert np.array_equal(c, small) and c.flags.c_contiguous and c.flags.writeable
    a = rng.standard_normal((8, 1, 20_000)).transpose(2, 1, 0)   # 1.28 MB, not C-ordered
    b = _batch_kernel.huge_page_copy(a)
    assert np.array_equal(a, b) and b.flags.c_contiguous and b.flags.writeable and b.dtype == a.dtype
    assert not np.shares_memory(a, b)
    assert not huge or b.ctypes.data % (2 << 20) == 0          # starts on a 2 MB page
    b[0, 0, 0] = a[0, 0, 0] + 1.0
    assert b[0, 0, 0] != a[0, 0, 0]
    # the kernel's delay buffer is such a copy (tvb76 at 4 m/s: above the threshold)
    made = _blocks_made(monkeypatch)
    simulate("jansen_rit", "tvb76", duration_s=0.01, params={"coupling": [1.0, 2.0]}, kernel="batch")
    H = made[0].blocks[0]["H"]
    assert H.nbytes >= _batch_kernel.HUGE_PAGE_MIN_BYTES and H.flags.c_contiguous
    assert not huge or H.ctypes.data % (2 << 20) == 0


def test_chunked_batch_run_equals_one_call(monkeypatch):
    from neurotwin_dash import simulate as sim_module
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.25, transient_s=0.05, seed=[2, 3, 4],
              params={"coupling": [1.0, 3.0, 5.0], "speed_m_s": 2.0}, kernel="batch")
    whole = simulate(**kw)
    monkeypatch.setattr(sim_module, "_MAX_CHUNK_STEPS", 70)  # many resumed chunks, delays > chunk
    chunked = simulate(**kw)
    assert np.array_equal(whole.v_pyr.values, chunked.v_pyr.values)
    alone = simulate(**{**kw, "seed": 3, "params": {"coupling": 3.0, "speed_m_s": 2.0}, "kernel": "member"})
    np.testing.assert_allclose(whole.v_pyr.values[1], alone.v_pyr.values[0], rtol=0, atol=1e-9)


# --- the counter generator (noise_rng="counter") -------------------------------------------

def test_philox_matches_random123_known_answers():
    # Random123's kat_vectors (Salmon et al. 2011): counter, key -> output
    m = 0xFFFFFFFF
    assert philox4x32(0, 0, 0, 0, 0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert philox4x32(m, m, m, m, m, m) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert philox4x32(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0) == \
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


def test_counter_normals_are_standard_normal_and_keyed_by_seed_and_step():
    z = counter_noise(11, 0, 20_000, 76, 1).ravel()                  # 1.52 M numbers
    n = z.size
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.var() - 1.0) < 4 * math.sqrt(2 / n)
    assert abs((z ** 4).mean() - 3.0) < 4 * math.sqrt(96 / n)
    # the same counters give the same numbers; another seed or step gives independent ones
    np.testing.assert_array_equal(counter_noise(11, 500, 10, 76, 1), counter_noise(11, 0, 510, 76, 1)[500:])
    other = counter_noise(12, 0, 20_000, 76, 1).ravel()
    assert abs(np.corrcoef(z, other)[0, 1]) < 4 / math.sqrt(n)
    assert abs(np.corrcoef(z[:-76], z[76:])[0, 1]) < 4 / math.sqrt(n)


def test_vectorisable_log_and_cos_sin_are_accurate():
    from numba import njit

    @njit
    def both(u):
        out = np.empty((u.size, 3))
        for k in range(u.size):
            out[k, 0] = log_unit(u[k])
            out[k, 1], out[k, 2] = cos_sin_turn(u[k])
        return out

    u = np.concatenate([np.random.default_rng(2).random(200_000), [2.0 ** -54, 0.5, 1.0 - 2.0 ** -53]])
    got = both(u)
    assert np.max(np.abs(got[:, 0] - np.log(u)) / np.maximum(np.abs(np.log(u)), 1e-300)) <= 2e-15
    assert np.max(np.abs(got[:, 1] - np.cos(2 * np.pi * u))) <= 2e-15
    assert np.max(np.abs(got[:, 2] - np.sin(2 * np.pi * u))) <= 2e-15


# every model once, Euler and Heun both covered (each case compiles two kernels)
@pytest.mark.parametrize("model,method", [("jansen_rit", "euler"), ("wendling", "heun"), ("lanmm", "heun"),
                                          ("wilson_cowan", "euler"), ("lopes_da_silva", "heun")])
def test_counter_noise_batch_kernel_equals_member_kernel_bit_for_bit(model, method):
    mod = get_model(model)
    rng = np.random.default_rng(3)
    drive = [Drive(rng.uniform(0.0, 1.0, (N_BATCH, 76)), lambda t: np.cos(2 * np.pi * 10 * t), "membrane")]
    record = list(mod.OUTPUTS) + [mod.STATES[mod.NOISE_STATES[0]]]
    kw = dict(model=model, connectome="tvb76", duration_s=0.05, method=method, drive=drive, record=record,
              params={"coupling": np.linspace(0.0, 4.0, N_BATCH)}, seed=list(range(N_BATCH)), noise_rng="counter")
    fast, ref = _both(**kw)
    assert fast.attrs["noise_rng"] == ref.attrs["noise_rng"] == "counter"
    assert not ref.diverged.any()
    for name in record:
        # the same operations in the same order and the same exp in both kernels: equal bits
        np.testing.assert_array_equal(fast[name].values, ref[name].values, err_msg=f"{model}.{name}")
    # the NumPy reference integrator fed the same increments (np.exp instead of the polynomial)
    slow = simulate(backend="numpy", **kw)
    assert_recorded_close(slow, ref, record, what=f"{model}.")


@pytest.mark.parametrize("model,method", [("jansen_rit", "euler"), ("lanmm", "heun")])
def test_one_shared_seed_draws_once_per_block_and_equals_member_kernel_bit_for_bit(model, method):
    # common random numbers (one seed for the batch, the sweeps' default): every lane has the same
    # key, so the batch kernel draws a step's increments once and copies them to the lanes; the
    # numbers must stay those of the per-member kernel. Seeds [4] * 9 + [5]: the first block has
    # one key (the shared draw), the second (padded) two keys (the per-lane draw)
    mod = get_model(model)
    record = list(mod.OUTPUTS) + [mod.STATES[mod.NOISE_STATES[0]]]
    for seed in (4, [4] * (N_BATCH - 1) + [5]):
        kw = dict(model=model, connectome="tvb76", duration_s=0.05, method=method, record=record,
                  params={"coupling": np.linspace(0.0, 4.0, N_BATCH)}, seed=seed, noise_rng="counter")
        fast, ref = _both(**kw)
        assert not ref.diverged.any()
        for name in record:
            np.testing.assert_array_equal(fast[name].values, ref[name].values, err_msg=f"{model}.{name} {seed}")
    # float32 (16 lanes, one block): the shared draw gives the per-lane draw's numbers
    kw = dict(model=model, connectome="tvb76", duration_s=0.05, method=method, record=record, kernel="batch",
              params={"coupling": np.linspace(0.0, 4.0, N_BATCH)}, noise_rng="counter", dtype="float32")
    one = simulate(seed=4, **kw)
    per_lane = simulate(seed=[4] * (N_BATCH - 1) + [5], **kw)
    for name in record:
        np.testing.assert_array_equal(one[name].values[:N_BATCH - 1], per_lane[name].values[:N_BATCH - 1],
                                      err_msg=f"{model}.{name} float32")


def test_block_width_keeps_threads_busy_and_widens_large_batches_of_small_models():
    bw = _batch_kernel.block_width
    assert bw("jansen_rit", "float64", 64, 2) == 16          # four blocks of two vectors
    assert bw("jansen_rit", "float64", 16, 2) == 8           # two blocks, one per thread
    assert bw("jansen_rit", "float64", 2, 2) == 8
    assert bw("jansen_rit", "float32", 64, 2) == 32 and bw("jansen_rit", "float32", 16, 2) == 16
    assert bw("lanmm", "float64", 64, 2) == 8 and bw("lanmm", "float32", 64, 1) == 16
    for n in range(1, 80):
        for t in (1, 2, 3):
            w = bw("wendling", "float64", n, t)
            # one vector while that gives every thread at most one block
            assert w in (8, 16) and (n > 8 * t or w == 8), (n, t, w)
    assert bw("wendling", "float64", 32, 1) == 16 and bw("wendling", "float64", 17, 1) == 8   # 3 x 8 < 2 x 16


@pytest.mark.parametrize("model,method", [("jansen_rit", "heun"), ("wilson_cowan", "euler")])
def test_two_vector_blocks_equal_member_kernel_bit_for_bit(model, method, monkeypatch):
    # 20 members in blocks of two vectors (16 lanes), the second block padded
    _force_vectors(monkeypatch, 2)
    made = _blocks_made(monkeypatch)
    mod = get_model(model)
    n = 20
    record = list(mod.OUTPUTS) + [mod.STATES[mod.NOISE_STATES[0]]]
    rng = np.random.default_rng(5)
    drive = [Drive(rng.uniform(0.0, 1.0, (n, 76)), lambda t: np.cos(2 * np.pi * 10 * t), "membrane")]
    kw = dict(model=model, connectome="tvb76", duration_s=0.05, method=method, drive=drive, record=record,
              params={"coupling": np.linspace(0.0, 4.0, n)}, seed=list(range(n)), noise_rng="counter")
    fast, ref = _both(**kw)
    assert [b["X"].shape[2] for b in made[0].blocks] == [16, 16]
    assert not ref.diverged.any()
    for name in record:
        np.testing.assert_array_equal(fast[name].values, ref[name].values, err_msg=f"{model}.{name}")
    # float32 blocks of 32 lanes give the numbers of blocks of 16
    kw32 = {**kw, "dtype": "float32", "kernel": "batch"}
    wide = simulate(**kw32)
    _force_vectors(monkeypatch, 1)
    narrow = simulate(**kw32)
    for name in record:
        np.testing.assert_array_equal(wide[name].values, narrow[name].values, err_msg=f"{model}.{name} float32")


def test_counter_noise_is_recorded_in_the_plan_and_member_k_equals_its_run_alone():
    from neurotwin_dash.simulate import plan
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.1)
    p_numpy, p_counter = plan(**kw), plan(noise_rng="counter", **kw)
    assert p_numpy.noise_rng == "numpy" and p_counter.noise_rng == "counter"
    assert p_numpy.fingerprint() != p_counter.fingerprint()
    with pytest.raises(SimulationError, match="noise_rng"):
        plan(noise_rng="philox", **kw)
    batch = simulate(params={"coupling": [1.0, 2.0, 3.0]}, seed=[5, 6, 7], noise_rng="counter", **kw)
    alone = simulate(params={"coupling": 2.0}, seed=6, noise_rng="counter", **kw)
    np.testing.assert_array_equal(batch.v_pyr.values[1], alone.v_pyr.values[0])
    # a different generator, the same statistics: not the NumPy run's numbers
    assert not np.allclose(batch.v_pyr.values[1], simulate(params={"coupling": 2.0}, seed=6, **kw).v_pyr.values[0])


# --- dtype="float32" (batch kernel only) ----------------------------------------------------

def test_float32_exp_matches_float64_exp_to_3e_7():
    many = _elementwise(exp32)
    x = np.linspace(-87.0, 88.0, 400_001).astype(np.float32)
    got = many(x)
    assert got.dtype == np.float32
    assert np.max(np.abs(got.astype(float) / np.exp(x.astype(float)) - 1.0)) <= 3e-7
    edge = many(np.array([np.nan, np.inf, -np.inf, 100.0, -100.0, 0.0], dtype=np.float32))
    assert np.isnan(edge[0]) and edge[1] == np.inf and edge[2] == 0.0 and edge[3] == np.inf
    assert edge[4] == 0.0 and edge[5] == 1.0


def _psd(da):
    from neurotwin_dash.analysis.spectra import welch
    return welch(da, window_s=2.0).mean(("batch", "region"))


@pytest.mark.parametrize("model,method,bands,peaks", [
    # Jansen–Rit's alpha rhythm; LaNMM's P1 alpha and P2 gamma (docs/science.md §3), Heun as the
    # AD scenario runs it
    ("jansen_rit", "euler", {"v_pyr": [(4, 8), (8, 13), (13, 30)]}, {"v_pyr": (8, 13)}),
    ("lanmm", "heun", {"v_p1": [(8, 12), (30, 50)], "v_p2": [(8, 12), (30, 50)]},
     {"v_p1": (8, 12), "v_p2": (30, 50)}),
])
def test_float32_batch_keeps_the_reference_behaviours_of_float64(model, method, bands, peaks):
    kw = dict(model=model, connectome="tvb76", duration_s=4.0, transient_s=1.0, method=method,
              params={"coupling": np.linspace(0.5, 2.0, 16)}, seed=list(range(16)), noise_rng="counter",
              record=list(bands))
    single, double = simulate(dtype="float32", **kw), simulate(**kw)
    assert single.attrs["dtype"] == "float32" and double.attrs["dtype"] == "float64"
    _assert_same_reference_behaviours(single, double, bands, peaks)


def _assert_same_reference_behaviours(single, double, bands, peaks):
    """Band powers within 2 %, peak frequencies within 0.1 Hz (issue 20's tolerances)."""
    assert not single.diverged.any() and not double.diverged.any()
    from neurotwin_dash.analysis.spectra import band_power, peak_frequency
    for name in bands:
        ps, pd = _psd(single[name]), _psd(double[name])
        for lo, hi in bands[name]:
            rs = float(band_power(ps, {"b": (lo, hi)}).squeeze())
            rd = float(band_power(pd, {"b": (lo, hi)}).squeeze())
            assert abs(rs / rd - 1.0) <= 0.02, (name, lo, hi, rs, rd)
        fs, fd = (float(peak_frequency(p, peaks[name])) for p in (ps, pd))
        assert abs(fs - fd) <= 0.1, (name, fs, fd)


def test_float32_needs_the_batch_kernel():
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.01, dtype="float32")
    with pytest.raises(SimulationError, match="float32"):
        simulate(kernel="member", params={"coupling": [1.0, 2.0]}, **kw)
    with pytest.raises(SimulationError, match="float32"):
        simulate(params={"speed_m_s": [3.0, 5.0]}, **kw)
    with pytest.raises(SimulationError, match="dtype"):
        simulate(model="jansen_rit", connectome="tvb76", duration_s=0.01, dtype="float16")


# --- math_mode="fast" (opt-in: a cheaper exp; counter noise, float64) ---------------------------

def test_fast_exp_matches_libm_to_2e_14_and_the_fast_sigmoid_the_reference():
    many = _elementwise(exp_fast)
    x = np.concatenate([np.linspace(-707.0, 709.0, 400_001), np.random.default_rng(4).uniform(-40, 40, 100_000)])
    assert np.max(np.abs(many(x) / np.exp(x) - 1.0)) <= 2e-14
    edge = many(np.array([np.nan, -1000.0, 1000.0, 0.0]))
    assert np.isnan(edge[0]) and abs(edge[3] - 1.0) <= 2e-14      # not exactly 1: the interpolant's c0
    assert edge[1] == pytest.approx(math.exp(-707.0), rel=1e-13) and edge[2] == pytest.approx(math.exp(709.0), rel=1e-13)
    # the models' sigmoid as relinked for the fast mode, against 2 e0 / (1 + exp(r (v0 - v))) in libm
    from neurotwin_dash.models._kernel import _relinked, sigmoid
    fast_sig = _relinked(sigmoid, fast=True)
    from numba import njit

    @njit
    def sig_many(v):
        out = np.empty_like(v)
        for k in range(v.size):
            out[k] = fast_sig(v[k], 2.5, 0.56, 6.0)
        return out
    v = np.linspace(-500.0, 500.0, 200_001)
    ref = 5.0 / (1.0 + np.exp(0.56 * (6.0 - v)))
    ok = ref > 5.0 * math.exp(-700.0)
    assert np.max(np.abs(sig_many(v)[ok] / ref[ok] - 1.0)) <= 3e-14


@pytest.mark.parametrize("model,method", [("jansen_rit", "euler"), ("lanmm", "heun")])
def test_fast_math_batch_kernel_equals_member_kernel_bit_for_bit(model, method):
    mod = get_model(model)
    record = list(mod.OUTPUTS)
    kw = dict(model=model, connectome="tvb76", duration_s=0.05, method=method, record=record,
              params={"coupling": np.linspace(0.0, 4.0, N_BATCH)}, seed=list(range(N_BATCH)), noise_rng="counter")
    fast, ref = _both(math_mode="fast", **kw)
    default = simulate(**kw)
    assert fast.attrs["math_mode"] == "fast" and "math_mode" not in default.attrs
    for name in record:
        np.testing.assert_array_equal(fast[name].values, ref[name].values, err_msg=f"{model}.{name}")
    # other numbers than the default mode (the stored counter-noise results are the default's), close
    assert not np.array_equal(fast[record[0]].values, default[record[0]].values)
    assert_recorded_close(fast, default, record, what=f"{model}.")


@pytest.mark.parametrize("model,method,bands,peaks", [
    ("jansen_rit", "euler", {"v_pyr": [(4, 8), (8, 13), (13, 30)]}, {"v_pyr": (8, 13)}),
    ("lanmm", "heun", {"v_p1": [(8, 12), (30, 50)], "v_p2": [(8, 12), (30, 50)]},
     {"v_p1": (8, 12), "v_p2": (30, 50)}),
])
def test_fast_math_keeps_the_reference_behaviours_of_the_default(model, method, bands, peaks):
    kw = dict(model=model, connectome="tvb76", duration_s=4.0, transient_s=1.0, method=method,
              params={"coupling": np.linspace(0.5, 2.0, 16)}, seed=list(range(16)), noise_rng="counter",
              record=list(bands))
    _assert_same_reference_behaviours(simulate(math_mode="fast", **kw), simulate(**kw), bands, peaks)


def test_fast_math_is_in_the_plan_and_refused_where_it_does_not_apply():
    from neurotwin_dash.simulate import plan
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.1, noise_rng="counter")
    p_default, p_fast = plan(**kw), plan(math_mode="fast", **kw)
    assert p_default.math_mode == "default" and p_fast.math_mode == "fast"
    assert p_default.fingerprint() != p_fast.fingerprint()
    with pytest.raises(SimulationError, match="math_mode"):
        plan(math_mode="turbo", **kw)
    for bad in (dict(noise_rng="numpy"), dict(dtype="float32"), dict(backend="numpy")):
        with pytest.raises(SimulationError, match="math_mode='fast'"):
            plan(**{**kw, **bad, "math_mode": "fast"})
