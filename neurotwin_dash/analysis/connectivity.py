"""Functional connectivity: Pearson FC, PLV, AEC, coherence, FCD, and fit scores.

Signals are DataArrays with ``time`` (s) and a node dim (``region`` by default, or
``sensor``); every other dim (``batch`` ...) is kept. Matrices come back with dims
(…, node, node2), e.g. ``(batch, region, region2)`` as in :mod:`neurotwin_dash.connectome`.
Computations are lifted with ``xarray.apply_ufunc(..., dask="parallelized")``.

Definitions (docs/science.md §6):

* FC: Pearson correlation over time (BOLD, or any signal).
* PLV: |⟨exp(i(φ_j − φ_k))⟩_t| of band-pass (zero-phase Butterworth) Hilbert phases
  (Lachaux et al. 1999).
* AEC: Pearson correlation of Hilbert amplitude envelopes (Brookes et al. 2011); with
  ``orthogonalise=True`` the pairwise orthogonalised version (Hipp et al. 2012), symmetrised.
* Coherence: magnitude-squared coherence averaged over the band, from mne-connectivity's
  ``spectral_connectivity_epochs`` (multitaper) on consecutive segments.
* FCD: FC in sliding windows, then the Pearson correlation between windows' upper
  triangles (Hansen et al. 2015); two FCDs are compared by the KS distance of their
  upper-triangle values.
* Fit score: Pearson r between the upper triangles of two FC matrices.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import signal, stats
from threadpoolctl import threadpool_limits

from .spectra import resolve_band, sampling_rate

__all__ = ["node_dim", "fc_pearson", "bandpass", "analytic_signal", "plv", "aec", "coherence",
           "fcd", "fcd_ks_distance", "upper_triangle", "fc_fit_score", "fc_sc_correlation"]


def node_dim(da: xr.DataArray) -> str:
    """The node dim of a signal: ``region`` or ``sensor``."""
    for d in ("region", "sensor"):
        if d in da.dims:
            return d
    raise ValueError(f"signal needs a 'region' or 'sensor' dim; got {da.dims}")


def _matrix_out(da_in, mat, node, name, attrs):
    node2 = node + "2"
    mat = mat.rename({"__a": node, "__b": node2}) if "__a" in mat.dims else mat
    labels = da_in[node].values if node in da_in.coords else np.arange(da_in.sizes[node])
    mat = mat.assign_coords({node: labels, node2: labels.copy()})
    mat.name = name
    mat.attrs = attrs
    return mat


def _apply_matrix(func, da, node, kwargs=None, core="time"):
    n = da.sizes[node]
    if da.chunks is not None:
        da = da.chunk({core: -1, node: -1})
    return xr.apply_ufunc(
        func, da, input_core_dims=[[core, node]], output_core_dims=[["__a", "__b"]],
        kwargs=kwargs or {}, dask="parallelized", output_dtypes=[float],
        dask_gufunc_kwargs={"output_sizes": {"__a": n, "__b": n}},
    )


def _corr_np(x):
    # x (..., time, node) -> (..., node, node)
    x = x - x.mean(axis=-2, keepdims=True)
    sd = np.sqrt((x * x).sum(axis=-2))
    # one BLAS thread: these tall-skinny products are fast on one core, and multi-threaded BLAS
    # spin-waits badly when Dask workers or other jobs share the cores
    with threadpool_limits(limits=1, user_api="blas"):
        c = np.swapaxes(x, -1, -2) @ x
    with np.errstate(divide="ignore", invalid="ignore"):
        c = c / (sd[..., :, None] * sd[..., None, :])
    return c


def fc_pearson(da: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Pearson correlation matrix over ``time`` (…, node, node2); NaN for constant nodes."""
    node = node_dim(da)
    mat = _apply_matrix(_corr_np, da, node, core=dim)
    return _matrix_out(da, mat, node, "fc", {"units": "1", "method": "Pearson correlation"})


def bandpass(da: xr.DataArray, band, order: int = 4) -> xr.DataArray:
    """Zero-phase Butterworth band-pass (second-order sections, ``sosfiltfilt``) along time."""
    fs = sampling_rate(da)
    lo, hi = resolve_band(band)
    if hi >= fs / 2:
        raise ValueError(f"band upper edge {hi} Hz must be below Nyquist ({fs / 2:g} Hz)")
    sos = signal.butter(order, [max(lo, 1e-3), hi], btype="bandpass", fs=fs, output="sos")
    if da.chunks is not None:
        da = da.chunk({"time": -1})
    out = xr.apply_ufunc(lambda x: signal.sosfiltfilt(sos, x, axis=-1), da,
                         input_core_dims=[["time"]], output_core_dims=[["time"]],
                         dask="parallelized", output_dtypes=[float])
    out = out.transpose(*da.dims)
    out.attrs = dict(da.attrs, band_hz=[lo, hi])
    return out


def analytic_signal(da: xr.DataArray, band=None) -> xr.DataArray:
    """Complex analytic signal (Hilbert) along time, band-passed first when ``band`` is given."""
    x = bandpass(da, band) if band is not None else da
    if x.chunks is not None:
        x = x.chunk({"time": -1})
    out = xr.apply_ufunc(lambda v: signal.hilbert(v - v.mean(axis=-1, keepdims=True), axis=-1), x,
                         input_core_dims=[["time"]], output_core_dims=[["time"]],
                         dask="parallelized", output_dtypes=[complex])
    return out.transpose(*da.dims)


def _plv_np(z):
    u = z / np.maximum(np.abs(z), 1e-300)
    with threadpool_limits(limits=1, user_api="blas"):
        m = (np.swapaxes(u, -1, -2) @ np.conj(u)) / z.shape[-2]
    return np.abs(m)


def plv(da: xr.DataArray, band="alpha", edge_s: float = 0.5) -> xr.DataArray:
    """Phase-locking value matrix in ``band`` (…, node, node2), in [0, 1].

    ``edge_s`` seconds at each end are dropped after filtering (filter/Hilbert edge effects).
    """
    node = node_dim(da)
    z = _trim(analytic_signal(da, band), edge_s)
    mat = _apply_matrix(_plv_np, z, node)
    return _matrix_out(da, mat, node, "plv", {"units": "1", "band_hz": list(resolve_band(band)),
                                              "method": "Hilbert phase-locking value"})


def _trim(z, edge_s):
    fs = sampling_rate(z)
    k = int(round(edge_s * fs))
    if k > 0 and z.sizes["time"] > 4 * k:
        z = z.isel(time=slice(k, -k))
    return z


def _aec_orth_np(z):
    # Hipp et al. 2012: orthogonalise y to x: y_perp = Im(y conj(x)/|x|); corr(|x|, |y_perp|)
    env = np.abs(z)
    n = z.shape[-1]
    out = np.empty(z.shape[:-2] + (n, n))
    xu = z / np.maximum(env, 1e-300)
    for i in range(n):
        yperp = np.abs(np.imag(z * np.conj(xu[..., i:i + 1])))       # (..., t, n): all j orth. to i
        a = env[..., :, i:i + 1] - env[..., :, i:i + 1].mean(axis=-2, keepdims=True)
        b = yperp - yperp.mean(axis=-2, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[..., i, :] = (a * b).sum(-2) / np.sqrt((a * a).sum(-2) * (b * b).sum(-2))
    out = 0.5 * (out + np.swapaxes(out, -1, -2))
    idx = np.arange(n)
    out[..., idx, idx] = 1.0
    return out


def aec(da: xr.DataArray, band="alpha", orthogonalise: bool = False, edge_s: float = 0.5) -> xr.DataArray:
    """Amplitude-envelope correlation matrix in ``band`` (…, node, node2)."""
    node = node_dim(da)
    z = _trim(analytic_signal(da, band), edge_s)
    if orthogonalise:
        mat = _apply_matrix(_aec_orth_np, z, node)
    else:
        env = np.abs(z)
        mat = _apply_matrix(_corr_np, env, node)
    return _matrix_out(da, mat, node, "aec", {
        "units": "1", "band_hz": list(resolve_band(band)),
        "method": "orthogonalised AEC (Hipp 2012)" if orthogonalise else "AEC (Hilbert envelopes)"})


def _coh_np(x, fs, lo, hi, seg):
    from mne_connectivity import spectral_connectivity_epochs  # heavy: mne-connectivity (~1.5 s), only for coherence
    n_t, n = x.shape
    n_ep = n_t // seg
    ep = x[: n_ep * seg].reshape(n_ep, seg, n).transpose(0, 2, 1)
    con = spectral_connectivity_epochs(ep, method="coh", sfreq=fs, mode="multitaper", fmin=lo, fmax=hi,
                                       faverage=True, verbose=False)
    d = con.get_data(output="dense")[..., 0]
    d = d + d.T
    np.fill_diagonal(d, 1.0)
    return d


def _coh_loop(x, fs, lo, hi, seg):
    flat = x.reshape((-1,) + x.shape[-2:])
    out = np.stack([_coh_np(v, fs, lo, hi, seg) for v in flat])
    return out.reshape(x.shape[:-2] + out.shape[-2:])


def coherence(da: xr.DataArray, band="alpha", segment_s: float = 2.0) -> xr.DataArray:
    """Magnitude-squared coherence averaged over ``band`` (…, node, node2).

    The signal is cut into consecutive ``segment_s`` segments used as epochs by
    mne-connectivity's ``spectral_connectivity_epochs`` (multitaper, ``method="coh"``).
    """
    node = node_dim(da)
    fs = sampling_rate(da)
    lo, hi = resolve_band(band)
    seg = int(round(segment_s * fs))
    if da.sizes["time"] < 2 * seg:
        raise ValueError(f"coherence needs at least two {segment_s} s segments; signal is "
                         f"{da.sizes['time'] / fs:g} s")
    mat = _apply_matrix(_coh_loop, da, node, kwargs=dict(fs=fs, lo=lo, hi=hi, seg=seg))
    return _matrix_out(da, mat, node, "coherence", {
        "units": "1", "band_hz": [lo, hi], "segment_s": segment_s,
        "method": "magnitude-squared coherence, mne-connectivity multitaper"})


def upper_triangle(mat: xr.DataArray, k: int = 1) -> np.ndarray:
    """Values above the diagonal of the last two dims, shape (…, n(n−1)/2)."""
    a = np.asarray(mat.values if isinstance(mat, xr.DataArray) else mat)
    n = a.shape[-1]
    if a.shape[-2] != n:
        raise ValueError(f"expected square matrices in the last two dims; got shape {a.shape}")
    i, j = np.triu_indices(n, k)
    return a[..., i, j]


def _fcd_np(x, win, step):
    n_t = x.shape[-2]
    starts = np.arange(0, n_t - win + 1, step)
    n = x.shape[-1]
    iu = np.triu_indices(n, 1)
    tri = np.stack([_corr_np(x[..., s:s + win, :])[..., iu[0], iu[1]] for s in starts], axis=-2)
    # windows play the role of nodes, pairs the role of time
    return _corr_np(np.swapaxes(tri, -1, -2))


def fcd(da: xr.DataArray, window_s: float = 60.0, step_s: float = 2.0) -> xr.DataArray:
    """Functional connectivity dynamics matrix (…, window, window2).

    FC (Pearson) in windows of ``window_s`` moved by ``step_s``; entry (a, b) is the Pearson
    correlation between the upper triangles of the FCs of windows a and b.
    """
    node = node_dim(da)
    fs = sampling_rate(da)
    win = int(round(window_s * fs))
    step = max(1, int(round(step_s * fs)))
    n_t = da.sizes["time"]
    if win < 3 or win > n_t:
        raise ValueError(f"window_s = {window_s} s must span 3 samples up to the signal length "
                         f"({n_t / fs:g} s)")
    starts = np.arange(0, n_t - win + 1, step)
    if starts.size < 2:
        raise ValueError("fcd needs at least two windows; shorten window_s or step_s")
    d = da.transpose(..., "time", node)
    if d.chunks is not None:
        d = d.chunk({"time": -1, node: -1})
    mat = xr.apply_ufunc(_fcd_np, d, input_core_dims=[["time", node]], output_core_dims=[["window", "window2"]],
                         kwargs=dict(win=win, step=step), dask="parallelized", output_dtypes=[float],
                         dask_gufunc_kwargs={"output_sizes": {"window": starts.size, "window2": starts.size}})
    t0 = float(da["time"].values[0])
    centres = t0 + (starts + win / 2) / fs
    mat = mat.assign_coords(window=centres, window2=centres.copy())
    mat.name = "fcd"
    mat.attrs = {"units": "1", "window_s": win / fs, "step_s": step / fs,
                 "method": "correlation of sliding-window FC upper triangles"}
    return mat


def fcd_ks_distance(fcd_a: xr.DataArray, fcd_b: xr.DataArray) -> float:
    """Kolmogorov–Smirnov distance between the upper-triangle values of two FCD matrices."""
    a = upper_triangle(fcd_a).ravel()
    b = upper_triangle(fcd_b).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise ValueError("an FCD matrix has no finite upper-triangle values")
    return float(stats.ks_2samp(a, b).statistic)


def fc_fit_score(fc_sim: xr.DataArray, fc_emp: xr.DataArray) -> xr.DataArray | float:
    """Pearson r between the upper triangles of simulated and empirical FC.

    ``fc_sim`` may carry leading dims (e.g. ``batch``): one score per member. Node labels are
    aligned by name when both have coordinates.
    """
    sim, emp = fc_sim, fc_emp
    if isinstance(sim, xr.DataArray) and isinstance(emp, xr.DataArray):
        node = next((d for d in emp.dims[-2:] if d in sim.dims), None)
        if node is not None and node in sim.coords and node in emp.coords:
            node2 = node + "2"
            if set(map(str, sim[node].values)) != set(map(str, emp[node].values)):
                raise ValueError("simulated and empirical FC have different node labels")
            emp = emp.sel({node: sim[node].values, node2: sim[node2].values}) if node2 in emp.dims else emp
    a = upper_triangle(sim)
    b = upper_triangle(emp)
    if b.ndim != 1 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"FC sizes differ: simulated {np.shape(sim)}, empirical {np.shape(emp)}")
    a = a - np.nanmean(a, axis=-1, keepdims=True)
    b = b - np.nanmean(b)
    r = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum())
    if isinstance(sim, xr.DataArray) and sim.ndim > 2:
        lead = sim.dims[:-2]
        return xr.DataArray(r, dims=lead, coords={k: v for k, v in sim.coords.items() if set(v.dims) <= set(lead)},
                            name="fc_fit", attrs={"units": "1", "method": "Pearson r of upper triangles"})
    return float(r)


def fc_sc_correlation(fc, weights) -> float:
    """Pearson r between an FC matrix and log10 of the symmetrised structural weights.

    Upper triangles; weights are scaled to a maximum of 1 and floored at 1e-3 before the log, so
    absent connections count as weak ones (the usual structure–function comparison).
    """
    w = np.asarray(weights, dtype=float)
    w = 0.5 * (w + w.T)
    w = w / w.max() if w.max() > 0 else w
    return float(fc_fit_score(np.asarray(fc, dtype=float), np.log10(w + 1e-3)))
