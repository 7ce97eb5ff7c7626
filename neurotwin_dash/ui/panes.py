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
from bokeh.models import (ColorBar, ColumnDataSource, CustomJSHover, FixedTicker, HoverTool,
                          LinearColorMapper, Range1d)
from bokeh.palettes import Inferno256, RdBu11, Viridis256, interp_palette
from bokeh.plotting import figure
from scipy.interpolate import RBFInterpolator

from ..connectome import hemisphere_runs
from ..models import get_model
from ..simulate import network_params
from .compute import BOLD_FC_MIN_S, FC_MEASURES

__all__ = [
    "CLASSIC_1020", "nan_joined", "spectra_data", "brain_map_data", "topomap_data", "fc_data",
    "matrix_limits", "hemisphere_groups",
    "traces_data", "set_columns", "SpectraPlot", "BrainMapPlot", "TopomapPlot", "MatrixPlot", "TracesPlot",
    "EXPLORER_PLOTS", "explorer_plots", "summary_markdown", "changed_settings", "preview_label",
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


def set_columns(source: ColumnDataSource, data: dict) -> None:
    """Replace the data of ``source`` by ``data``, sending only the columns that changed.

    A new result of the same shape usually keeps its x values (frequencies, times, positions):
    those are not sent to the browser again (half of a spectra update's bytes), and a source
    whose data did not change at all sends nothing and is not redrawn.
    """
    old = source.data
    if set(old) != set(data) or any(len(old[k]) != len(data[k]) for k in data):
        source.data = data
        return
    changed = {k: v for k, v in data.items() if not _same(old[k], v)}
    if changed:
        source.data.update(changed)


def _same(a, b) -> bool:
    try:
        a, b = np.asarray(a), np.asarray(b)
    except ValueError:              # ragged lists: treat as changed
        return False
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


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
        return f"{what}{out} ({n} {unit}){preview_label(res, ' — ')}"

    def update(self, res, highlight: str = ""):
        d = spectra_data(res, self.kind, highlight)
        if d is None:
            for s in (self.all, self.mean, self.hi):
                s.data = {"x": [], "y": []}
            self.figure.title.text = self._title(res)
            return
        a, m, h, label, n = d
        for source, data in ((self.all, a), (self.mean, m), (self.hi, h)):
            set_columns(source, data)
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

    ``symmetric`` centres a diverging palette on zero (fields) and spans the largest |value|;
    otherwise the colour range spans the 2nd–98th percentile (powers) unless :meth:`show` is given ``limits``.
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
                    # the whole range: with ~100 regions a percentile clips the one peak region
                    lim = _limits(np.abs(data["power"]), (0, 100))[1]
                    limits = (-lim, lim)
                else:
                    limits = _limits(data["power"])
            self.mapper.low, self.mapper.high = limits
            set_columns(self.source, data)
        self.figure.title.text = title

    def update(self, res, band: str = "low_gamma"):
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
    :func:`neurotwin_dash.ui.compute.sensor_layout_2d`), masked outside the head outline (radius 1). Returns
    ``(grid (n, n), sensors dict)`` or ``None``.
    """
    if not _has(res, "band_sensor", "sensor_xy"):
        return None
    xy = res["sensor_xy"].values
    v = _log10(res["band_sensor"].sel(band=band).values)
    g = np.linspace(-1.15, 1.15, n)
    X, Y = np.meshgrid(g, g)
    Z = np.full(X.shape, np.nan)
    ok = np.isfinite(v)
    if ok.sum() >= 4:
        f = RBFInterpolator(xy[ok], v[ok], kernel="thin_plate_spline", smoothing=1e-6)
        Z = f(np.column_stack([X.ravel(), Y.ravel()])).reshape(X.shape)
        Z[np.hypot(X, Y) > 1.0] = np.nan     # nothing drawn beyond the head outline
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
        # band power is non-negative: a sequential map (a diverging one suggests a sign)
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1, nan_color=(0, 0, 0, 0))
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
        set_columns(self.image, {"image": [Z], "x": [-1.15], "y": [-1.15], "dw": [2.3], "dh": [2.3]})
        set_columns(self.sensors, sensors)
        self.figure.title.text = f"Simulated EEG {band} power (log10 µV²)"


# --- matrices ------------------------------------------------------------------------------

def hemisphere_groups(res) -> list[tuple[int, int, str]]:
    """Hemisphere runs of a result's regions (:func:`neurotwin_dash.connectome.hemisphere_runs`);
    one unnamed group when the result has no ``hemisphere`` variable."""
    if "hemisphere" not in res:
        return [(0, res.sizes["region"], "")]
    return [(a, b, name or "other") for a, b, name in hemisphere_runs(res["hemisphere"].values)]


def matrix_limits(*matrices):
    """Shared colour limits and palette kind for matrices compared side by side.

    Off-diagonal values only. Non-negative data get a sequential map from 0 to the maximum;
    signed data a diverging map symmetric about 0. Returns ``(low, high, "sequential"|"diverging")``.
    """
    vals = []
    for m in matrices:
        m = np.array(m, dtype=float)
        np.fill_diagonal(m, np.nan)
        vals.append(m[np.isfinite(m)])
    v = np.concatenate(vals) if vals else np.array([])
    if v.size == 0:
        return 0.0, 1.0, "sequential"
    if v.min() >= 0:
        return 0.0, float(max(v.max(), 1e-6)), "sequential"
    lim = float(max(np.abs(v).max(), 1e-6))
    return -lim, lim, "diverging"


def fc_data(res, measure: str = "plv_alpha"):
    """FC image (row = target) of one measure: simulated above the diagonal, empirical below.

    Returns ``(matrix (n, n) with NaN diagonal, title, (low, high, kind))`` or ``None``. Both
    triangles share the colour limits (:func:`matrix_limits`). The title gives r(FC, log SC) and,
    with an empirical FC, r(simulated, empirical); a measure that could not be computed (BOLD FC
    on a short run) gives an empty matrix and a title saying why.
    """
    if measure not in FC_MEASURES:
        raise ValueError(f"FC measure {measure!r} unknown; allowed: {', '.join(FC_MEASURES)}")
    if not _has(res, "fc"):
        if res is not None and preview_label(res) and res.sizes.get("region", 1) > 1:
            n = res.sizes["region"]      # a preview computes no FC (see compute.explorer_job)
            return (np.full((n, n), np.nan), f"{FC_MEASURES[measure]} ({n} regions); {preview_label(res)}, "
                    "too short for FC", (0.0, 1.0, "sequential"))
        return None
    fc = np.array(res["fc"].sel(measure=measure).values, dtype=float)
    n = fc.shape[0]
    label = FC_MEASURES[measure]
    if not np.isfinite(fc).any():
        why = (f"needs ≥ {BOLD_FC_MIN_S:g} s simulated" if measure == "bold" else "not computed")
        return np.full((n, n), np.nan), f"{label}: {why}", (0.0, 1.0, "sequential")
    parts = [f"{label} ({n} regions)"]
    sc_r = float(res["fc_sc_r"].sel(measure=measure)) if "fc_sc_r" in res else np.nan
    if preview_label(res):
        # an FC estimate from the preview's second of data is mostly sampling noise: no r is shown
        parts.append(f"{preview_label(res)}, too short for FC")  # r(FC, SC) with the full run
    elif np.isfinite(sc_r):
        parts.append(f"r(FC, log SC) = {sc_r:.2f}")
    lim = matrix_limits(fc)
    if "fc_empirical" in res:
        emp = np.asarray(res["fc_empirical"].values, dtype=float)
        lim = matrix_limits(fc, emp)
        low = np.tril_indices(n, k=-1)
        fc[low] = emp[low]
        fit = float(res["fc_fit"].sel(measure=measure)) if "fc_fit" in res else np.nan
        parts = [f"{label}: simulated (upper) vs empirical (lower)", f"r = {fit:.2f}"]
    np.fill_diagonal(fc, np.nan)
    return fc, "; ".join(parts), lim


_LABEL_JS = """
const L = src.data.labels; const i = Math.round(value);
return (i >= 0 && i < L.length) ? L[i] : '';
"""


class MatrixPlot:
    """A region × region matrix (row = target at y, column = source at x) with a colour bar.

    Axes carry hemisphere groups (separator lines, group names as ticks); hovering shows the
    region labels and the value.
    """

    def __init__(self, name: str, title: str, palette, low: float, high: float, value_label: str):
        # region 0 at the top left, as matrices are printed (y runs downwards)
        self.x_range, self.y_range = Range1d(-0.5, 0.5), Range1d(0.5, -0.5)
        fig = _base_figure(name, title, "source region", "target region", width=_W, height=_H + 60,
                           x_range=self.x_range, y_range=self.y_range)
        fig.grid.visible = False
        self.name = name
        self.fixed = (low, high)
        self.mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=(0, 0, 0, 0))
        self.source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.labels = ColumnDataSource({"labels": []})
        self.separators = ColumnDataSource({"xs": [], "ys": []})
        r = fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                      color_mapper=self.mapper)
        fig.multi_line("xs", "ys", source=self.separators, color="black", line_width=1.2)
        fmt = CustomJSHover(code=_LABEL_JS, args={"src": self.labels})
        fig.add_tools(HoverTool(renderers=[r], tooltips=[("source", "$x{custom}"), ("target", "$y{custom}"),
                                                          (value_label, "@image{0.000}")],
                                formatters={"$x": fmt, "$y": fmt}))
        self.colorbar = ColorBar(color_mapper=self.mapper, title=value_label, width=12)
        fig.add_layout(self.colorbar, "right")
        self.ticker = FixedTicker(ticks=[])
        for ax in (fig.xaxis, fig.yaxis):
            ax.ticker = self.ticker
            ax.major_label_text_font_size = "10pt"
        self.figure = fig

    def show(self, matrix, title: str, autoscale: bool = False, labels=None, groups=None,
             limits=None, palette=None):
        """Show ``matrix`` (or clear with ``None``); ``groups`` from :func:`hemisphere_groups`."""
        if matrix is None:
            self.source.data = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
            self.separators.data = {"xs": [], "ys": []}
        else:
            n = matrix.shape[0]
            set_columns(self.source, {"image": [np.asarray(matrix, dtype=float)], "x": [-0.5], "y": [-0.5],
                                      "dw": [n], "dh": [n]})
            self.x_range.start, self.x_range.end = -0.5, n - 0.5
            self.y_range.start, self.y_range.end = n - 0.5, -0.5
            set_columns(self.labels, {"labels": list(labels) if labels is not None else [str(i) for i in range(n)]})
            groups = groups or [(0, n, "")]
            cuts = [g[0] - 0.5 for g in groups[1:]]
            set_columns(self.separators, {"xs": [[c, c] for c in cuts] + [[-0.5, n - 0.5] for c in cuts],
                                          "ys": [[-0.5, n - 0.5] for c in cuts] + [[c, c] for c in cuts]})
            self.ticker.ticks = [0.5 * (g[0] + g[1] - 1) for g in groups]
            overrides = {0.5 * (g[0] + g[1] - 1): g[2] for g in groups}
            self.figure.xaxis.major_label_overrides = overrides
            self.figure.yaxis.major_label_overrides = overrides
            if palette is not None:
                self.mapper.palette = palette
            if limits is not None:
                self.mapper.low, self.mapper.high = limits
            elif autoscale:
                self.mapper.low, self.mapper.high = _limits(matrix, (0, 100))
        self.figure.title.text = title


class FCPlot(MatrixPlot):
    def __init__(self):
        super().__init__("fc-matrix", "Functional connectivity (waiting…)", Viridis256, 0.0, 1.0, "FC")

    def update(self, res, measure: str = "plv_alpha"):
        d = fc_data(res, measure)
        if d is None:
            self.show(None, "Functional connectivity (single node: none)" if res is not None
                      else "Functional connectivity (waiting…)")
            return
        fc, title, (low, high, kind) = d
        self.show(fc, title, labels=[str(s) for s in res["region"].values], groups=hemisphere_groups(res),
                  limits=(low, high), palette=Viridis256 if kind == "sequential" else _RDBU)


class WeightsPlot(MatrixPlot):
    def __init__(self):
        super().__init__("weights", "Structural weights (waiting…)", Viridis256, -3, 0, "log10 weight")

    def update(self, res):
        if not _has(res, "weights"):
            self.show(None, "Structural weights (single node: none)" if res is not None
                      else "Structural weights (waiting…)")
        else:
            self.show(_log10(res["weights"].values),
                      f"Structural weights used ({res.attrs.get('connectome', '')}, log10)", autoscale=True,
                      labels=[str(s) for s in res["region"].values], groups=hemisphere_groups(res))


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
        set_columns(self.source, line)
        self.ticker.ticks = list(ticks)
        self.figure.yaxis.major_label_overrides = {k: v for k, v in ticks.items()}
        self.figure.title.text = title


#: the explorer's plots: key -> class (or factory), in display order
EXPLORER_PLOTS = {
    "region_spectra": lambda: SpectraPlot("region"),
    "sensor_spectra": lambda: SpectraPlot("sensor"),
    "brain_map": BrainMapPlot,
    "topomap": TopomapPlot,
    "fc_matrix": FCPlot,
    "eeg_traces": TracesPlot,
    "weights": WeightsPlot,
}


def explorer_plots(keys=None) -> dict:
    """The explorer's plots by key, in display order (only ``keys`` when given)."""
    keys = list(EXPLORER_PLOTS) if keys is None else list(keys)
    unknown = [k for k in keys if k not in EXPLORER_PLOTS]
    if unknown:
        raise ValueError(f"unknown explorer plot(s) {unknown}; allowed: {', '.join(EXPLORER_PLOTS)}")
    return {k: EXPLORER_PLOTS[k]() for k in keys}


# --- text ----------------------------------------------------------------------------------

def changed_settings(res: xr.Dataset) -> dict:
    """Model/network parameters and connectome edits of a result that differ from the defaults."""
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


def preview_label(res, prefix: str = "") -> str:
    """``"preview: 1 s"`` (after ``prefix``) for a preview result, ``""`` for a full run."""
    if res is None or not float(res.attrs.get("preview_of_s", 0.0) or 0.0) > 0:
        return ""
    spec = json.loads(res.attrs.get("spec", "{}"))
    return f"{prefix}preview: {float(spec.get('duration_s', 0.0)):g} s"


def summary_markdown(res: xr.Dataset | None, error: str = "", busy: bool = False,
                     measure: str = "plv_alpha") -> str:
    """One paragraph describing the latest result (peak frequency, timings, changes, divergence)."""
    if res is None:
        return "Simulating…" if busy else (f"**Error:** {error}" if error else "No simulation yet.")
    f = res["frequency"].values
    p = res["psd_region"].values
    sel = f >= 1.0
    peaks = f[sel][np.nanargmax(np.where(np.isfinite(p[:, sel]), p[:, sel], -np.inf), axis=1)]
    lines = []
    if preview_label(res):
        spec = json.loads(res.attrs.get("spec", "{}"))
        lines.append(f"**{preview_label(res)}** — the server is busy: a short run of the same settings is "
                     f"shown while the full {spec.get('preview_of_s', 0):g} s run is computed.")
    lines += [
        f"**{res.attrs.get('model')}** on **{res.attrs.get('connectome') or 'one node'}** — "
        f"median spectral peak **{np.median(peaks):.2f} Hz**; simulated in "
        f"{res.attrs.get('simulate_s', float('nan')):.2f} s, job {res.attrs.get('elapsed_s', float('nan')):.2f} s.",
    ]
    changed = changed_settings(res)
    lines.append("Settings changed from the defaults: " + (", ".join(
        f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in changed.items()) or "none") + ".")
    if "fc_sc_r" in res and measure in FC_MEASURES:
        sc_r = float(res["fc_sc_r"].sel(measure=measure))
        fit = float(res["fc_fit"].sel(measure=measure))
        if preview_label(res):
            lines.append(f"{FC_MEASURES[measure]}: FC and its r with SC are shown with the full run "
                         f"(the preview is too short an estimate).")
        elif np.isfinite(sc_r):
            lines.append(f"{FC_MEASURES[measure]}: r(FC, log SC) = **{sc_r:.2f}**"
                         + (f", fit to empirical FC r = **{fit:.3f}**." if np.isfinite(fit) else "."))
    if res.attrs.get("diverged"):
        lines.append("**Diverged** — the state left its bounds; values after the divergence are NaN.")
    return "  \n".join(lines)
