"""Plots of dashboard results: pure functions ``result Dataset -> HoloViews element``.

Each function accepts ``None`` (no result yet) or a result lacking its variables (e.g. no EEG
for a single node) and then returns the same element type, empty and titled accordingly, so a
``hv.DynamicMap`` over it updates its Bokeh data sources in place instead of rebuilding plots.
Plot names (``plot.state.name``) let browser tests and the benchmark find each figure.
"""
from __future__ import annotations

import warnings

import holoviews as hv
import numpy as np
import xarray as xr

__all__ = ["region_spectra", "sensor_spectra", "brain_map", "topomap", "fc_matrix", "eeg_traces",
           "connectome_weights", "summary_markdown", "changed_settings", "head_outline", "named", "CLASSIC_1020"]

#: channels shown as traces when the montage has them (the classic 10-20 set)
CLASSIC_1020 = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8",
                "P7", "P3", "Pz", "P4", "P8", "O1", "O2"]

_W, _H = 470, 330


def named(name: str):
    """Hook giving the Bokeh figure a name (``Bokeh.documents[0].get_model_by_name(name)``)."""
    def hook(plot, element):
        plot.state.name = name
    return hook


def _has(res, *names) -> bool:
    return res is not None and all(n in res for n in names)


def _log10(p):
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.where(p > 0, p, np.nan))
    return out


def _nan_joined(x: np.ndarray, rows: np.ndarray, offsets=None):
    """Concatenate ``rows`` (n, len(x)) into one line separated by NaN (optionally offset)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=float))
    n = rows.shape[0]
    if rows.size == 0:
        return np.array([]), np.array([])
    off = np.zeros(n) if offsets is None else np.asarray(offsets, dtype=float)
    xs = np.tile(np.append(np.asarray(x, dtype=float), np.nan), n)
    ys = np.column_stack([rows + off[:, None], np.full(n, np.nan)]).ravel()
    return xs, ys


def _spectra(freqs, psd, labels, highlight, title, unit, name):
    """Overlay: every row of ``psd`` thin, their mean thick, the ``highlight`` row in colour."""
    lp = _log10(psd)
    # all rows as one NaN-separated line: one glyph instead of hundreds (fast server-side updates)
    xs, ys = _nan_joined(freqs, lp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(lp, axis=0) if lp.size else np.array([])
    hi = lp[labels.index(highlight)] if highlight in labels else np.full_like(freqs, np.nan)
    kd, vd = hv.Dimension("frequency", unit="Hz"), hv.Dimension("log10 PSD", label=f"log10 PSD ({unit})")
    el = (hv.Curve((xs, ys), kd, vd, label="regions").opts(color="#9aa7b5", alpha=0.45, line_width=1,
                                                            framewise=True)
          * hv.Curve((freqs, mean), kd, vd, label="mean").opts(color="black", line_width=2.5, framewise=True)
          * hv.Curve((freqs, hi), kd, vd, label=str(highlight) or "-").opts(color="#d62728", line_width=2,
                                                                           framewise=True))
    return el.opts(hv.opts.Overlay(title=title, width=_W, height=_H, framewise=True, legend_position="top_right",
                                   hooks=[named(name)], show_grid=True))


def region_spectra(res: xr.Dataset | None, region: str = "") -> hv.Overlay:
    """Power spectrum of every region (grey), their mean (black) and ``region`` (red)."""
    if not _has(res, "psd_region"):
        f = np.linspace(0, 100, 3)
        return _spectra(f, np.full((1, 3), np.nan), [], "", "Region spectra (waiting…)", "mV²/Hz",
                        "region-spectra")
    labels = [str(s) for s in res["region"].values]
    unit = res["psd_region"].attrs.get("units", "mV^2/Hz").replace("^2", "²")
    n = len(labels)
    title = f"Region spectra ({n} region{'s' if n > 1 else ''}, {res.attrs.get('output', '')})"
    return _spectra(res["frequency"].values, res["psd_region"].values, labels, region, title, unit,
                    "region-spectra")


def sensor_spectra(res: xr.Dataset | None, channel: str = "Oz") -> hv.Overlay:
    """Power spectrum of every simulated EEG channel, their mean and ``channel``."""
    if not _has(res, "psd_sensor"):
        f = np.linspace(0, 100, 3)
        why = "waiting…" if res is None else "needs a connectome and a montage"
        return _spectra(f, np.full((1, 3), np.nan), [], "", f"EEG spectra ({why})", "µV²/Hz",
                        "sensor-spectra")
    labels = [str(s) for s in res["sensor"].values]
    if channel not in labels:
        channel = next((c for c in ("Oz", "O1", "Pz", "Cz") if c in labels), labels[0])
    return _spectra(res["frequency"].values, res["psd_sensor"].values, labels, channel,
                    f"Simulated EEG spectra ({len(labels)} channels)", "µV²/Hz", "sensor-spectra")


def head_outline(radius: float = 1.0, n: int = 101) -> hv.Curve:
    """Head circle with a nose, nose up (+y), for topomaps and axial brain maps."""
    t = np.linspace(0, 2 * np.pi, n)
    x, y = radius * np.cos(t), radius * np.sin(t)
    nose_x = radius * np.array([-0.12, 0.0, 0.12])
    nose_y = radius * np.array([0.993, 1.12, 0.993])
    xs = np.concatenate([x, [np.nan], nose_x])
    ys = np.concatenate([y, [np.nan], nose_y])
    return hv.Curve((xs, ys), "x", "y").opts(color="black", line_width=1.5)


def brain_map(res: xr.Dataset | None, band: str = "low gamma") -> hv.Overlay:
    """Band power per region at the region centres, axial projection (x right, y anterior, mm)."""
    kd = [hv.Dimension("x", label="x (right, mm)"), hv.Dimension("y", label="y (anterior, mm)")]
    vd = ["log10 power", "region"]
    if not _has(res, "band_region", "centres"):
        why = "waiting…" if res is None else "needs a connectome"
        pts = hv.Points(([], [], [], []), kd, vd)
        title = f"{band} power per region ({why})"
        outline = hv.Curve(([], []), "x", "y")
    else:
        c = res["centres"].values
        p = _log10(res["band_region"].sel(band=band).values)
        pts = hv.Points((c[:, 0], c[:, 1], p, [str(s) for s in res["region"].values]), kd, vd)
        lo, hi = np.nanpercentile(p, [2, 98]) if np.isfinite(p).any() else (0, 1)
        pts = pts.redim.range(**{"log10 power": (float(lo), float(hi) if hi > lo else float(lo) + 1)})
        t = np.linspace(0, 2 * np.pi, 121)
        # a brain-sized ellipse (MNI-like extents) as a landmark
        outline = hv.Curve((72 * np.cos(t), -17 + 88 * np.sin(t)), "x", "y")
        title = f"{band} power per region (axial view, log10)"
    lims = dict(xlim=(-90, 90), ylim=(-125, 95))
    return (outline.opts(color="#888", line_width=1, **lims)
            * pts.opts(color="log10 power", cmap="inferno", size=11, colorbar=True, tools=["hover"],
                       line_color="#333", line_width=0.5, framewise=True, **lims)).opts(
        hv.opts.Overlay(title=title, frame_width=260, frame_height=318, xlim=(-90, 90), ylim=(-125, 95),
                        hooks=[named("brain-map")], xlabel="x (right, mm)", ylabel="y (anterior, mm)"))


def _interp_topo(xy: np.ndarray, values: np.ndarray, n: int = 64):
    from scipy.interpolate import RBFInterpolator
    g = np.linspace(-1.15, 1.15, n)
    X, Y = np.meshgrid(g, g)
    ok = np.isfinite(values)
    Z = np.full(X.shape, np.nan)
    if ok.sum() >= 4:
        f = RBFInterpolator(xy[ok], values[ok], kernel="thin_plate_spline", smoothing=1e-6)
        Z = f(np.column_stack([X.ravel(), Y.ravel()])).reshape(X.shape)
        Z[np.hypot(X, Y) > 1.12] = np.nan
    return g, Z


def topomap(res: xr.Dataset | None, band: str = "alpha") -> hv.Overlay:
    """Scalp map of simulated EEG band power (log10 µV²), interpolated between electrodes."""
    bounds = (-1.15, -1.15, 1.15, 1.15)
    if not _has(res, "band_sensor", "sensor_xy"):
        why = "waiting…" if res is None else "needs a connectome and a montage"
        img = hv.Image(np.full((2, 2), np.nan), bounds=bounds, kdims=["x", "y"], vdims=["log10 power"])
        pts = hv.Points(([], [], []), ["x", "y"], ["channel"])
        title = f"{band} band power, scalp ({why})"
    else:
        xy = res["sensor_xy"].values
        p = _log10(res["band_sensor"].sel(band=band).values)
        g, Z = _interp_topo(xy, p)
        img = hv.Image((g, g, Z), kdims=["x", "y"], vdims=["log10 power"])
        pts = hv.Points((xy[:, 0], xy[:, 1], [str(s) for s in res["sensor"].values]), ["x", "y"], ["channel"])
        title = f"Simulated EEG {band} power (log10 µV²)"
    return (img.opts(cmap="RdBu_r", colorbar=True, tools=["hover"], framewise=True)
            * pts.opts(color="black", size=3, tools=["hover"])
            * head_outline()).opts(
        hv.opts.Overlay(title=title, frame_width=290, frame_height=290, xlim=(-1.25, 1.25),
                        ylim=(-1.25, 1.25), xaxis=None, yaxis=None, hooks=[named("topomap")]))


def fc_matrix(res: xr.Dataset | None) -> hv.Image:
    """Simulated FC (Pearson); with an empirical FC: simulated above, empirical below the diagonal."""
    if not _has(res, "fc"):
        img = hv.Image(np.full((2, 2), np.nan), bounds=(-0.5, -0.5, 1.5, 1.5),
                       kdims=["source", "target"], vdims=["r"])
        title = "Functional connectivity (waiting…)"
    else:
        fc = np.array(res["fc"].values, dtype=float)
        n = fc.shape[0]
        title = f"Simulated FC (Pearson, {n} regions)"
        if "fc_empirical" in res:
            emp = res["fc_empirical"].values
            low = np.tril_indices(n, k=-1)
            fc[low] = emp[low]
            title = (f"FC: simulated (upper) vs empirical (lower), r = {res.attrs.get('fc_fit', np.nan):.2f}")
        np.fill_diagonal(fc, np.nan)
        img = hv.Image(fc[::-1], bounds=(-0.5, -0.5, n - 0.5, n - 0.5), kdims=["source", "target"],
                       vdims=[hv.Dimension("r", range=(-1, 1))])
    return img.opts(cmap="RdBu_r", clim=(-1, 1), colorbar=True, width=_W, height=_H + 40, title=title,
                    tools=["hover"], framewise=True, hooks=[named("fc-matrix")])


def eeg_traces(res: xr.Dataset | None, seconds: float = 3.0) -> hv.Overlay:
    """A few seconds of simulated EEG (classic 10-20 channels), or of the region signals without EEG."""
    if _has(res, "eeg"):
        names = [str(s) for s in res["sensor"].values]
        pick = [c for c in CLASSIC_1020 if c in names] or names[:16]
        da = res["eeg"].sel(sensor=pick)
        unit, what = "µV", "Simulated EEG"
    elif _has(res, "trace"):
        names = [str(s) for s in res["region"].values]
        pick = names[:16]
        da = res["trace"].sel(region=pick)
        unit, what = res["trace"].attrs.get("units", "mV"), "Region signals"
    else:
        return hv.Overlay([hv.Curve(([], []), "time", "offset").opts(color="#1f4e79", framewise=True)]).opts(
            title="Traces (waiting…)", width=_W, height=_H + 40, hooks=[named("eeg-traces")], framewise=True)
    t = da["time_eeg"].values
    keep = t <= t[0] + seconds
    x = np.asarray(da.values, dtype=float)[keep]
    t = t[keep]
    x = x - np.nanmean(x, axis=0, keepdims=True)
    spread = float(np.nanpercentile(np.abs(x), 99)) if np.isfinite(x).any() else 1.0
    spread = spread if spread > 0 else 1.0
    offsets = -np.arange(len(pick)) * 2.0 * spread
    xs, ys = _nan_joined(t, x.T, offsets)
    ticks = [(float(o), n) for o, n in zip(offsets, pick)]
    el = hv.Curve((xs, ys), "time", "offset").opts(color="#1f4e79", line_width=1, framewise=True)
    return hv.Overlay([el]).opts(
        title=f"{what} (scale bar: {2 * spread:.3g} {unit} between lines)", width=_W, height=_H + 40,
        yticks=ticks, xlabel="time (s)", ylabel="", framewise=True, hooks=[named("eeg-traces")])


def connectome_weights(res: xr.Dataset | None) -> hv.Image:
    """Structural weights used in the simulation (after normalisation and edits), log10."""
    if not _has(res, "weights"):
        img = hv.Image(np.full((2, 2), np.nan), bounds=(-0.5, -0.5, 1.5, 1.5), kdims=["source", "target"],
                       vdims=["log10 weight"])
        title = "Structural weights (single node: none)" if res is not None else "Structural weights (waiting…)"
    else:
        w = res["weights"].values
        n = w.shape[0]
        img = hv.Image(_log10(w)[::-1], bounds=(-0.5, -0.5, n - 0.5, n - 0.5), kdims=["source", "target"],
                       vdims=["log10 weight"])
        title = f"Structural weights used ({res.attrs.get('connectome', '')}, log10)"
    return img.opts(cmap="viridis", colorbar=True, width=_W, height=_H + 40, title=title, tools=["hover"],
                    framewise=True, hooks=[named("weights")])


def changed_settings(res: xr.Dataset) -> dict:
    """Model/network parameters and connectome edits of a result that differ from the defaults."""
    import json
    from ..models import get_model
    from ..simulate import NETWORK_PARAMS
    spec = json.loads(res.attrs.get("spec", "{}"))
    if not spec:
        return {}
    defaults = dict(get_model(spec["model"]).PARAMS.defaults(), **NETWORK_PARAMS.defaults())
    out = {k: float(v) for k, v in spec.get("params", {}).items()
           if k in defaults and not np.isclose(float(v), defaults[k])}
    if spec.get("weight_scale", 1.0) != 1.0:
        out["weight scale"] = float(spec["weight_scale"])
    if spec.get("lesions"):
        out["lesioned"] = ", ".join(spec["lesions"])
    if spec.get("edges"):
        out["edited edges"] = len(spec["edges"])
    if spec.get("seed", 0) != 0:
        out["seed"] = int(spec["seed"])
    return out


def summary_markdown(res: xr.Dataset | None, error: str = "", busy: bool = False) -> str:
    """One paragraph describing the latest result (peak frequency, timings, divergence)."""
    if res is None:
        return "Simulating…" if busy else (f"**Error:** {error}" if error else "No simulation yet.")
    f = res["frequency"].values
    p = res["psd_region"].values
    sel = f >= 1.0
    peaks = f[sel][np.nanargmax(np.where(np.isfinite(p[:, sel]), p[:, sel], -np.inf), axis=1)]
    lines = [
        f"**{res.attrs.get('model')}** on **{res.attrs.get('connectome') or 'one node'}** — "
        f"median spectral peak **{np.median(peaks):.2f} Hz**; simulated in "
        f"{res.attrs.get('simulate_s', float('nan')):.2f} s, job {res.attrs.get('elapsed_s', float('nan')):.2f} s.",
    ]
    changed = changed_settings(res)
    lines.append("Settings changed from the defaults: " + (", ".join(f"{k} = {v:g}" if isinstance(v, float)
                                                                   else f"{k} = {v}" for k, v in changed.items())
                                                         or "none") + ".")
    fit = res.attrs.get("fc_fit", float("nan"))
    if np.isfinite(fit):
        lines.append(f"FC fit to empirical: r = **{fit:.3f}**.")
    if res.attrs.get("diverged"):
        lines.append("**Diverged** — the state left its bounds; values after the divergence are NaN.")
    return "  \n".join(lines)
