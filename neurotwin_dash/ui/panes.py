"""Live plots of dashboard results: one Bokeh figure per plot, updated in place.

Each plot class builds its figure once and has ``update(result, ...)`` that only replaces the
data of its ``ColumnDataSource`` objects (and a title or colour range). That keeps a served
page cheap to update: no figure is rebuilt, and the server's event loop spends a few
milliseconds per plot instead of the tens HoloViews needs for the same update. The data of
each plot comes from a pure function (``*_data``) of the result ``xarray.Dataset``, which the
tests check against the numbers.

Every function and class accepts ``None`` (no result yet) or a result without the variables
it needs (e.g. no EEG for a single node) and then shows an empty plot whose title says why.
Figures carry names (``region-spectra``, ``brain-map``...) that browser tests and the
benchmark use to find them (``Bokeh.documents[0].get_model_by_name``).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import xarray as xr
from bokeh.core.properties import value
from bokeh.models import (ColorBar, ColumnDataSource, FixedTicker, HoverTool, LinearColorMapper, Range1d)
from bokeh.palettes import Inferno256, RdBu11, Viridis256, interp_palette
from bokeh.plotting import figure

__all__ = [
    "CLASSIC_1020", "nan_joined", "spectra_data", "brain_map_data", "topomap_data", "fc_data",
    "traces_data", "SpectraPlot", "BrainMapPlot", "TopomapPlot", "MatrixPlot", "TracesPlot",
    "explorer_plots", "summary_markdown", "changed_settings",
]

#: channels shown as traces when the montage has them (the classic 10-20 set)
CLASSIC_1020 = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8",
                "P7", "P3", "Pz", "P4", "P8", "O1", "O2"]

_W, _H = 470, 340
_RDBU = list(interp_palette(RdBu11, 256))   # Bokeh's RdBu runs blue (low) -> red (high)


def _has(res, *names) -> bool:
    return res is not None and all(n in res for n in names)


def _log10(p):
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.where(p > 0, p, np.nan))


def nan_joined(x, rows, offsets=None):
    """Concatenate ``rows`` (n, len(x)) into one NaN-separated line (optionally offset per row).

    One glyph for hundreds of lines: Bokeh breaks a line at NaN.
    """
    rows = np.atleast_2d(np.asarray(rows, dtype=float))
    if rows.size == 0:
        return np.array([]), np.array([])
    n = rows.shape[0]
    off = np.zeros(n) if offsets is None else np.asarray(offsets, dtype=float)
    xs = np.tile(np.append(np.asarray(x, dtype=float), np.nan), n)
    ys = np.column_stack([rows + off[:, None], np.full(n, np.nan)]).ravel()
    return xs, ys


def _base_figure(name, title, x_label, y_label, width=_W, height=_H, **kw):
    if "frame_width" not in kw:
        kw.update(width=width, height=height)
    fig = figure(name=name, title=title, x_axis_label=x_label, y_axis_label=y_label,
                 tools="pan,wheel_zoom,box_zoom,reset,save", css_classes=[f"plot-{name}"], **kw)
    fig.toolbar.logo = None
    return fig


# --- spectra -------------------------------------------------------------------------------

def spectra_data(res, kind: str = "region", highlight: str = ""):
    """Columns of a spectra plot: every row (NaN-joined), their mean and one highlighted row.

    ``kind`` is ``"region"`` (``psd_region``) or ``"sensor"`` (``psd_sensor``); values are
    log10 of the PSD. Returns ``(all, mean, highlight, highlight_label, n_rows)`` with each
    of the first three a dict ``{"x": ..., "y": ...}``; ``None`` when the result lacks the data.
    """
    var = f"psd_{kind}"
    if not _has(res, var):
        return None
    labels = [str(s) for s in res[kind].values]
    f = res["frequency"].values
    lp = _log10(res[var].values)
    xs, ys = nan_joined(f, lp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(lp, axis=0)
    if highlight not in labels:
        pref = ("Oz", "O1", "Pz", "Cz") if kind == "sensor" else ()
        highlight = next((c for c in pref if c in labels), labels[0])
    hi = lp[labels.index(highlight)]
    return {"x": xs, "y": ys}, {"x": f, "y": mean}, {"x": f, "y": hi}, highlight, len(labels)


class SpectraPlot:
    """Log power spectra: all rows grey, the mean black, one row red."""

    def __init__(self, kind: str = "region"):
        self.kind = kind
        self.name = f"{kind}-spectra"
        unit = "mV²/Hz" if kind == "region" else "µV²/Hz"
        self.figure = _base_figure(self.name, self._title(None), "frequency (Hz)", f"log10 PSD ({unit})")
        self.all = ColumnDataSource({"x": [], "y": []})
        self.mean = ColumnDataSource({"x": [], "y": []})
        self.hi = ColumnDataSource({"x": [], "y": []})
        self.figure.line("x", "y", source=self.all, color="#9aa7b5", alpha=0.5, line_width=1,
                         legend_label="all")
        self.figure.line("x", "y", source=self.mean, color="black", line_width=2.5, legend_label="mean")
        self.hi_renderer = self.figure.line("x", "y", source=self.hi, color="#d62728", line_width=2,
                                            legend_label="selected")
        self.figure.legend.location = "top_right"
        self.figure.legend.label_text_font_size = "9pt"

    def _title(self, res, n=0):
        what = "Region spectra" if self.kind == "region" else "Simulated EEG spectra"
        if res is None:
            return f"{what} (waiting…)"
        if n == 0:
            return f"{what} (needs a connectome and a montage)"
        unit = "regions" if self.kind == "region" else "channels"
        out = f" of {res.attrs.get('output', '')}" if self.kind == "region" else ""
        return f"{what}{out} ({n} {unit})"

    def update(self, res, highlight: str = ""):
        d = spectra_data(res, self.kind, highlight)
        if d is None:
            for s in (self.all, self.mean, self.hi):
                s.data = {"x": [], "y": []}
            self.figure.title.text = self._title(res)
            return
        a, m, h, label, n = d
        self.all.data, self.mean.data, self.hi.data = a, m, h
        unit = res[f"psd_{self.kind}"].attrs.get("units", "").replace("^2", "²")
        if unit:
            self.figure.yaxis.axis_label = f"log10 PSD ({unit})"
        self.figure.legend.items[2].label = value(label)
        self.figure.title.text = self._title(res, n)


# --- brain map -----------------------------------------------------------------------------

def brain_map_data(res, band: str):
    """Region centres (x right, y anterior; mm) and log10 band power, or ``None``."""
    if not _has(res, "band_region", "centres"):
        return None
    c = res["centres"].values
    p = _log10(res["band_region"].sel(band=band).values)
    return {"x": c[:, 0], "y": c[:, 1], "power": p, "region": [str(s) for s in res["region"].values]}


def _limits(values, pct=(2, 98)):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, pct)
    return float(lo), float(hi if hi > lo else lo + 1e-6 + abs(lo) * 1e-3)


class BrainMapPlot:
    """A value per region at the region centres, axial view with an outline.

    ``symmetric`` centres a diverging palette on zero (fields); otherwise the colour range
    spans the 2nd–98th percentile (powers) unless :meth:`show` is given ``limits``.
    """

    def __init__(self, name: str = "brain-map", palette=Inferno256, value_label: str = "log10 power",
                 symmetric: bool = False, title: str = "power per region (waiting…)"):
        self.name, self.value_label, self.symmetric = name, value_label, symmetric
        fig = _base_figure(name, title, "x (right, mm)", "y (anterior, mm)",
                           frame_width=260, frame_height=318, x_range=Range1d(-90, 90),
                           y_range=Range1d(-125, 95))
        t = np.linspace(0, 2 * np.pi, 121)
        fig.line(72 * np.cos(t), -17 + 88 * np.sin(t), color="#999", line_width=1)
        self.mapper = LinearColorMapper(palette=palette, low=0, high=1)
        self.source = ColumnDataSource({"x": [], "y": [], "power": [], "region": []})
        r = fig.scatter("x", "y", source=self.source, size=11, line_color="#333", line_width=0.5,
                        fill_color={"field": "power", "transform": self.mapper})
        fig.add_tools(HoverTool(renderers=[r], tooltips=[("region", "@region"), (value_label, "@power")]))
        fig.add_layout(ColorBar(color_mapper=self.mapper, title=value_label, width=12), "right")
        self.figure = fig

    def show(self, data, title: str, limits=None):
        """Show ``data`` (dict x, y, power, region, or ``None``) with ``title``."""
        if data is None:
            self.source.data = {"x": [], "y": [], "power": [], "region": []}
        else:
            if limits is None:
                if self.symmetric:
                    lim = _limits(np.abs(data["power"]), (0, 99))[1]
                    limits = (-lim, lim)
                else:
                    limits = _limits(data["power"])
            self.mapper.low, self.mapper.high = limits
            self.source.data = data
        self.figure.title.text = title

    def update(self, res, band: str = "low gamma"):
        d = brain_map_data(res, band)
        if d is None:
            why = "waiting…" if res is None else "needs a connectome"
            self.show(None, f"{band} power per region ({why})")
        else:
            self.show(d, f"{band} power per region (axial view)")


# --- topomap -------------------------------------------------------------------------------

def topomap_data(res, band: str, n: int = 64):
    """Interpolated scalp map of log10 EEG band power on an ``n × n`` grid over [-1.15, 1.15]².

    Thin-plate-spline radial basis interpolation between the electrodes (positions from
    :func:`neurotwin_dash.ui.compute.sensor_layout_2d`), masked outside radius 1.12. Returns
    ``(grid (n, n), sensors dict)`` or ``None``.
    """
    if not _has(res, "band_sensor", "sensor_xy"):
        return None
    from scipy.interpolate import RBFInterpolator
    xy = res["sensor_xy"].values
    v = _log10(res["band_sensor"].sel(band=band).values)
    g = np.linspace(-1.15, 1.15, n)
    X, Y = np.meshgrid(g, g)
    Z = np.full(X.shape, np.nan)
    ok = np.isfinite(v)
    if ok.sum() >= 4:
        f = RBFInterpolator(xy[ok], v[ok], kernel="thin_plate_spline", smoothing=1e-6)
        Z = f(np.column_stack([X.ravel(), Y.ravel()])).reshape(X.shape)
        Z[np.hypot(X, Y) > 1.12] = np.nan
    sensors = {"x": xy[:, 0], "y": xy[:, 1], "channel": [str(s) for s in res["sensor"].values], "power": v}
    return Z, sensors


class TopomapPlot:
    """Scalp map of simulated EEG band power, nose up."""

    name = "topomap"

    def __init__(self):
        fig = _base_figure(self.name, "EEG band power (waiting…)", "", "", frame_width=300, frame_height=300,
                           x_range=Range1d(-1.25, 1.25), y_range=Range1d(-1.25, 1.25))
        fig.axis.visible = False
        fig.grid.visible = False
        self.mapper = LinearColorMapper(palette=_RDBU, low=0, high=1, nan_color=(0, 0, 0, 0))
        self.image = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.image, color_mapper=self.mapper)
        self.sensors = ColumnDataSource({"x": [], "y": [], "channel": [], "power": []})
        r = fig.scatter("x", "y", source=self.sensors, size=4, color="black")
        fig.add_tools(HoverTool(renderers=[r], tooltips=[("channel", "@channel"), ("log10 power", "@power")]))
        t = np.linspace(0, 2 * np.pi, 101)
        fig.line(np.cos(t), np.sin(t), color="black", line_width=1.5)
        fig.line([-0.12, 0.0, 0.12], [0.993, 1.12, 0.993], color="black", line_width=1.5)
        fig.add_layout(ColorBar(color_mapper=self.mapper, title="log10 µV²", width=12), "right")
        self.figure = fig

    def update(self, res, band: str = "alpha"):
        d = topomap_data(res, band)
        if d is None:
            self.image.data = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
            self.sensors.data = {"x": [], "y": [], "channel": [], "power": []}
            why = "waiting…" if res is None else "needs a connectome and a montage"
            self.figure.title.text = f"EEG {band} power ({why})"
            return
        Z, sensors = d
        self.mapper.low, self.mapper.high = _limits(Z, (1, 99))
        self.image.data = {"image": [Z], "x": [-1.15], "y": [-1.15], "dw": [2.3], "dh": [2.3]}
        self.sensors.data = sensors
        self.figure.title.text = f"Simulated EEG {band} power (log10 µV²)"


# --- matrices ------------------------------------------------------------------------------

def fc_data(res):
    """FC image (row = target): simulated above the diagonal, empirical below when loaded.

    Returns ``(matrix (n, n) with NaN diagonal, title)`` or ``None``.
    """
    if not _has(res, "fc"):
        return None
    fc = np.array(res["fc"].values, dtype=float)
    n = fc.shape[0]
    title = f"Simulated FC (Pearson, {n} regions)"
    if "fc_empirical" in res:
        low = np.tril_indices(n, k=-1)
        fc[low] = res["fc_empirical"].values[low]
        title = f"FC: simulated (upper) vs empirical (lower), r = {res.attrs.get('fc_fit', np.nan):.2f}"
    np.fill_diagonal(fc, np.nan)
    return fc, title


class MatrixPlot:
    """A region × region matrix (row = target at y, column = source at x) with a colour bar."""

    def __init__(self, name: str, title: str, palette, low: float, high: float, value_label: str):
        fig = _base_figure(name, title, "source", "target", width=_W, height=_H + 60)
        fig.grid.visible = False
        self.name = name
        self.fixed = (low, high)
        self.mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=(0, 0, 0, 0))
        self.source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        r = fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                      color_mapper=self.mapper)
        fig.add_tools(HoverTool(renderers=[r], tooltips=[("source", "$x{0}"), ("target", "$y{0}"),
                                                          (value_label, "@image")]))
        fig.add_layout(ColorBar(color_mapper=self.mapper, title=value_label, width=12), "right")
        self.figure = fig

    def show(self, matrix, title: str, autoscale: bool = False):
        if matrix is None:
            self.source.data = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
        else:
            n = matrix.shape[0]
            self.source.data = {"image": [np.asarray(matrix, dtype=float)], "x": [-0.5], "y": [-0.5],
                                "dw": [n], "dh": [n]}
            if autoscale:
                self.mapper.low, self.mapper.high = _limits(matrix, (0, 100))
        self.figure.title.text = title


class FCPlot(MatrixPlot):
    def __init__(self):
        super().__init__("fc-matrix", "Functional connectivity (waiting…)", _RDBU, -1.0, 1.0, "r")

    def update(self, res):
        d = fc_data(res)
        if d is None:
            self.show(None, "Functional connectivity (waiting…)")
        else:
            self.show(*d)


class WeightsPlot(MatrixPlot):
    def __init__(self):
        super().__init__("weights", "Structural weights (waiting…)", Viridis256, -3, 0, "log10 weight")

    def update(self, res):
        if not _has(res, "weights"):
            self.show(None, "Structural weights (single node: none)" if res is not None
                      else "Structural weights (waiting…)")
        else:
            self.show(_log10(res["weights"].values),
                      f"Structural weights used ({res.attrs.get('connectome', '')}, log10)", autoscale=True)


# --- traces --------------------------------------------------------------------------------

def traces_data(res, seconds: float = 3.0):
    """Stacked traces: EEG (classic 10-20 channels) when present, else up to 16 region signals.

    Returns ``(line dict, ticks {offset: name}, title)`` or ``None``.
    """
    if _has(res, "eeg"):
        names = [str(s) for s in res["sensor"].values]
        pick = [c for c in CLASSIC_1020 if c in names] or names[:16]
        da = res["eeg"].sel(sensor=pick)
        unit, what = "µV", "Simulated EEG"
    elif _has(res, "trace"):
        pick = [str(s) for s in res["region"].values][:16]
        da = res["trace"].sel(region=pick)
        unit, what = res["trace"].attrs.get("units", "mV"), "Region signals"
    else:
        return None
    t = da["time_eeg"].values
    keep = t <= t[0] + seconds
    x = np.asarray(da.values, dtype=float)[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x = x - np.nanmean(x, axis=0, keepdims=True)
        spread = float(np.nanpercentile(np.abs(x), 99)) if np.isfinite(x).any() else 1.0
    spread = spread if spread > 0 else 1.0
    offsets = -np.arange(len(pick)) * 2.0 * spread
    xs, ys = nan_joined(t[keep], x.T, offsets)
    return ({"x": xs, "y": ys}, {float(o): n for o, n in zip(offsets, pick)},
            f"{what} ({2 * spread:.3g} {unit} between lines)")


class TracesPlot:
    name = "eeg-traces"

    def __init__(self):
        fig = _base_figure(self.name, "Traces (waiting…)", "time (s)", "", width=_W, height=_H + 60)
        self.source = ColumnDataSource({"x": [], "y": []})
        fig.line("x", "y", source=self.source, color="#1f4e79", line_width=1)
        self.ticker = FixedTicker(ticks=[])
        fig.yaxis.ticker = self.ticker
        fig.ygrid.visible = False
        self.figure = fig

    def update(self, res):
        d = traces_data(res)
        if d is None:
            self.source.data = {"x": [], "y": []}
            self.figure.title.text = "Traces (waiting…)"
            return
        line, ticks, title = d
        self.source.data = line
        self.ticker.ticks = list(ticks)
        self.figure.yaxis.major_label_overrides = {k: v for k, v in ticks.items()}
        self.figure.title.text = title


def explorer_plots() -> dict:
    """The explorer's plots by key, in display order."""
    return {
        "region_spectra": SpectraPlot("region"),
        "sensor_spectra": SpectraPlot("sensor"),
        "brain_map": BrainMapPlot(),
        "topomap": TopomapPlot(),
        "fc_matrix": FCPlot(),
        "eeg_traces": TracesPlot(),
        "weights": WeightsPlot(),
    }


# --- text ----------------------------------------------------------------------------------

def changed_settings(res: xr.Dataset) -> dict:
    """Model/network parameters and connectome edits of a result that differ from the defaults."""
    from ..models import get_model
    from ..simulate import network_params
    spec = json.loads(res.attrs.get("spec", "{}"))
    if not spec:
        return {}
    defaults = dict(get_model(spec["model"]).PARAMS.defaults(), **network_params(spec["model"]).defaults())
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
    """One paragraph describing the latest result (peak frequency, timings, changes, divergence)."""
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
    lines.append("Settings changed from the defaults: " + (", ".join(
        f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in changed.items()) or "none") + ".")
    fit = res.attrs.get("fc_fit", float("nan"))
    if np.isfinite(fit):
        lines.append(f"FC fit to empirical: r = **{fit:.3f}**.")
    if res.attrs.get("diverged"):
        lines.append("**Diverged** — the state left its bounds; values after the divergence are NaN.")
    return "  \n".join(lines)
