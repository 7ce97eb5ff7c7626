"""A lab-meeting report: one self-contained HTML page of a simulation, readable on a projector.

:func:`report_html` turns a twin (or a simulation result) into a page with the figures (inline
SVG, so the file travels alone and scales on any screen), the parameters (non-default values
marked), and the provenance (package versions, connectome hash, and whether a fresh run
reproduced the twin's output bit for bit). ``neurotwin report --twin twin.nc --out report.html``
writes it; the explorer's download button builds the same page from its current run.

Figures follow the conventions of the field: power spectra on a log axis, band powers on a log
axis with the spread over regions as error bars, FC next to the structure with region groups
(hemispheres) marked and sequential colour maps for non-negative quantities, the EEG topography
as an MNE topomap (head outline, sensors, nothing drawn beyond the head), traces with a labelled
scale bar. Fonts are ≥ 12 pt on a 1280-px-wide page.
"""
from __future__ import annotations

import html
import io
import json
import time

import matplotlib
import numpy as np
import xarray as xr

from . import __version__
from . import analysis as an
from .catalog import load as load_catalog
from .connectome import hemisphere_runs
from .io.files import write_text
from .observe.eeg import pick_eeg_variable, simulated_eeg
from .simulate import all_params
from .twin import Twin, result_hash

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

__all__ = ["report_figures", "report_html", "write_report", "figure_svg", "figure_png", "topomap_figure",
           "eeg_traces_figure", "plot_region_matrix"]

#: matplotlib settings of every report figure: large enough for a projector
STYLE = {"font.size": 14, "axes.titlesize": 15, "axes.labelsize": 14, "xtick.labelsize": 12,
         "ytick.labelsize": 12, "legend.fontsize": 12, "figure.dpi": 100}

#: EEG montage of the report's topomap and traces (a standard 10-20 set with positions in MNE)
MONTAGE = "standard_1020"


def _region_signal(result: xr.Dataset) -> xr.DataArray:
    var = pick_eeg_variable(result)
    var = var[0] if isinstance(var, list) else var
    return result[var].isel(batch=0).transpose("time", "region").fillna(0.0)


def plot_region_matrix(ax, m, conn, title, cmap, vmin, vmax, label):
    """Draw a region × region matrix on ``ax``: hemisphere separators and names, a colour bar.

    A connectome whose hemispheres interleave (AAL orders regions L, R, L, R, ...) is drawn with
    its regions grouped by hemisphere (stable: the order within a hemisphere is kept); the axis
    labels say so. Returns the region order drawn (indices into ``conn``).
    """
    m = np.asarray(m)
    order = np.arange(conn.n_regions)
    grouped = ""
    if "hemisphere" in conn.ds:
        codes = np.asarray(conn.ds["hemisphere"].values).astype(str)
        if len(hemisphere_runs(codes)) > 3:
            order = np.argsort([{"L": 0, "R": 1}.get(c, 2) for c in codes], kind="stable")
            m = m[np.ix_(order, order)]
            grouped = ", grouped by hemisphere"
        groups = hemisphere_runs(codes[order])
    else:
        groups = [(0, conn.n_regions, "")]
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for start, _, _ in groups[1:]:
        ax.axhline(start - 0.5, color="black", lw=1.2)
        ax.axvline(start - 0.5, color="black", lw=1.2)
    ticks = [0.5 * (a + b - 1) for a, b, _ in groups]
    ax.set_xticks(ticks, [g[2] for g in groups])
    ax.set_yticks(ticks, [g[2] for g in groups], rotation=90, va="center")
    ax.set_xlabel(f"source region{grouped}")
    ax.set_ylabel(f"target region{grouped}")
    ax.set_title(title)
    plt.colorbar(im, ax=ax, shrink=0.8, label=label)
    return order


def report_figures(result: xr.Dataset, connectome=None) -> dict:
    """The report's matplotlib figures of batch member 0 of ``result`` (name -> Figure).

    ``spectra`` and ``band_powers`` always; with a connectome also ``fc`` (alpha PLV next to
    log10 SC, with r between them), ``topomap`` (EEG alpha power, MNE) and ``eeg_traces``.
    """
    figs = {}
    x = _region_signal(result)
    unit = x.attrs.get("units", "mV")
    psd = an.welch(x.assign_attrs(units=unit), fmax=80.0)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.8))
        f = psd["frequency"].values
        lp = psd.transpose("region", "frequency").values
        lo, med, hi = np.percentile(lp, [5, 50, 95], axis=0)
        ax.fill_between(f, lo, hi, color="#9aa7b5", alpha=0.5, label="5–95 % of regions")
        ax.plot(f, med, color="black", lw=2, label="median region")
        ax.set_yscale("log")
        ax.set_xlim(1, 80)
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel(f"PSD ({unit}²/Hz)")
        peak = float(an.peak_frequency(psd, band=(2.0, 45.0)).median())
        ax.set_title(f"Region spectra of {x.name} — median peak {peak:.2f} Hz")
        ax.legend()
        fig.tight_layout()
        figs["spectra"] = fig

        bp = an.band_power(psd).transpose("band", "region")
        fig, ax = plt.subplots(figsize=(8, 4.8))
        q = np.percentile(bp.values, [25, 50, 75], axis=1)
        names = [str(b) for b in bp["band"].values]
        ax.bar(names, q[1], color="#4c72b0")
        ax.errorbar(names, q[1], yerr=[q[1] - q[0], q[2] - q[1]], fmt="none", ecolor="black", capsize=5)
        ax.set_yscale("log")
        ax.set_ylabel(f"band power ({unit}²)")
        ax.set_title("Band power: median region, bars = interquartile range over regions")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        figs["band_powers"] = fig

        conn = connectome
        if conn is None and result.attrs.get("connectome") not in (None, "", "none"):
            conn = load_catalog(result.attrs["connectome"])
        elif isinstance(conn, str):
            conn = load_catalog(conn)
        if conn is not None and x.sizes["region"] > 1:
            plv = an.plv(x, band="alpha").values
            w = np.asarray(conn.weights, dtype=float)
            w = 0.5 * (w + w.T)
            logw = np.log10(w / w.max() + 1e-3)
            r = an.fc_sc_correlation(plv, conn.weights)
            off = plv.copy()
            np.fill_diagonal(off, np.nan)
            fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
            plot_region_matrix(axes[0], off, conn, f"Alpha PLV (simulated), r with log SC = {r:.2f}", "viridis",
                    0.0, float(np.nanmax(off)), "PLV")
            plot_region_matrix(axes[1], logw, conn, "Structural connectivity", "viridis", -3.0, 0.0, "log10 weight (max = 0)")
            fig.tight_layout()
            figs["fc"] = fig

            figs.update(_eeg_figures(result, conn))
    return figs


def _eeg_figures(result, conn) -> dict:
    raw = simulated_eeg(result, montage=MONTAGE, connectome=conn)
    return {"topomap": topomap_figure(raw), "eeg_traces": eeg_traces_figure(raw)}


def topomap_figure(raw, band=(8.0, 13.0), label: str = "alpha"):
    """MNE topomap of the EEG band power of ``raw`` (µV², sequential map, head outline, sensors)."""
    import mne   # heavy; only the EEG figures need it
    spec = raw.compute_psd(fmin=1.0, fmax=45.0, n_fft=int(2 * raw.info["sfreq"]), verbose=False)
    freqs = spec.freqs
    sel = (freqs >= band[0]) & (freqs < band[1])
    power = spec.get_data()[:, sel].sum(axis=1) * (freqs[1] - freqs[0]) * 1e12
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
        im, _ = mne.viz.plot_topomap(power, raw.info, axes=ax, cmap="viridis", sensors=True, contours=4,
                                     extrapolate="head", show=False)
        plt.colorbar(im, ax=ax, shrink=0.8, label=f"{label} power (µV²)")
        ax.set_title(f"Simulated EEG {label} ({band[0]:g}–{band[1]:g} Hz) power")
        fig.tight_layout()
    return fig


def eeg_traces_figure(raw, picks=("Fz", "Cz", "Pz", "O1", "O2", "T7", "T8"), seconds: float = 3.0):
    """Stacked EEG traces (µV) of ``raw`` with a labelled amplitude scale bar."""
    picks = [c for c in picks if c in raw.ch_names]
    data = raw.get_data(picks=picks) * 1e6
    sf = raw.info["sfreq"]
    n = int(min(data.shape[1], seconds * sf))
    t = np.arange(n) / sf
    data = data[:, :n] - data[:, :n].mean(axis=1, keepdims=True)
    spread = float(np.percentile(np.abs(data), 99)) * 2.2 or 1.0
    bar = float(f"{spread / 2:.1g}")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(10, 5))
        for i in range(len(picks)):
            ax.plot(t, data[i] - i * spread, color="#1f4e79", lw=1)
        ax.set_yticks([-i * spread for i in range(len(picks))], picks)
        x0 = t[-1] * 1.05
        ax.plot([x0, x0], [0, -bar], color="black", lw=3)
        ax.text(x0 + 0.02 * t[-1], -bar / 2, f"{bar:g} µV", va="center", fontsize=14)
        ax.set_xlim(0, t[-1] * 1.2)
        ax.set_xlabel("time (s)")
        ax.set_title("Simulated EEG (average reference)")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
    return fig


def figure_svg(fig) -> str:
    """A figure as an SVG document (text)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()


def figure_png(fig, dpi: int = 150) -> bytes:
    """A figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 18px; max-width: 1240px;
       margin: 20px auto; color: #1b1b1b; }
h1 { font-size: 32px; color: #1f4e79; } h2 { font-size: 24px; border-bottom: 2px solid #1f4e79; }
table { border-collapse: collapse; font-size: 16px; } td, th { border: 1px solid #c8d2dc; padding: 4px 10px; }
th { background: #eef3f8; text-align: left; } .changed { font-weight: bold; color: #a0301e; }
figure { margin: 16px 0; } figure svg { width: 100%; height: auto; }
.verified { color: #1d7a1d; font-weight: bold; } .not-verified { color: #a0301e; font-weight: bold; }
"""


def _table(rows, header) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=changed' if i == 0 and cls else ''}>{html.escape(str(c))}</td>"
                                   for i, c in enumerate(r)) + "</tr>" for r, cls in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _param_rows(twin: Twin) -> list:
    specs = all_params(twin.model)
    rows = []
    for name in specs.names:
        s = specs[name]
        v = twin.params.get(name, s.default)
        shown = (f"per region: {np.min(v):.4g}–{np.max(v):.4g}" if isinstance(v, np.ndarray) else f"{float(v):.6g}")
        changed = isinstance(v, np.ndarray) or not np.isclose(float(v), float(s.default))
        rows.append(((name, shown, s.unit, f"{s.default:g}", s.doc), changed))
    return rows


def report_html(twin: Twin, result: xr.Dataset | None = None, title: str | None = None) -> str:
    """The report page of ``twin`` (re-simulated unless its ``result`` is given), as HTML text."""
    t0 = time.perf_counter()
    result = twin.simulate() if result is None else result
    expected = twin.provenance.get("output_sha256")
    verified = expected is not None and result_hash(result) == expected
    figs = report_figures(result, twin.connectome)
    conn = twin.connectome
    conn_name = "one uncoupled node" if conn is None else (conn if isinstance(conn, str) else conn.name)
    title = title or f"neurotwin {twin.name}: {twin.model} on {conn_name}"
    sim = twin.simulation
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{twin.model} on {html.escape(conn_name)}; {sim['duration_s']:g} s simulated at dt "
             f"{sim['dt_ms']:g} ms ({sim['method']}), seed {sim['seed']}, {len(twin.drives)} stimulation "
             f"drive(s). Report made with neurotwin-dash {__version__} on {time.strftime('%Y-%m-%d %H:%M')}.</p>",
             "<h2>Figures</h2>"]
    captions = {"spectra": "Power spectra of every region (log axis).",
                "band_powers": "Band powers (analysis library bands, edges low ≤ f < high).",
                "fc": "Alpha-band phase-locking value against the structural connectome; black lines "
                      "separate the hemispheres.",
                "topomap": f"Scalp map of the simulated EEG ({MONTAGE}, four-layer sphere, average reference).",
                "eeg_traces": "Three seconds of simulated EEG; the black bar is the amplitude scale."}
    for name, fig in figs.items():
        parts.append(f"<figure id='fig-{name}'>{figure_svg(fig)}<figcaption>{html.escape(captions.get(name, ''))}"
                     "</figcaption></figure>")
        plt.close(fig)
    parts.append("<h2>Parameters</h2><p>Values different from the model's defaults are in bold red.</p>")
    parts.append(_table(_param_rows(twin), ["parameter", "value", "unit", "default", "meaning"]))
    if twin.fit:
        parts.append("<h2>Fit</h2><pre>" + html.escape(json.dumps(twin.fit, indent=1, default=str)[:4000]) + "</pre>")
    prov = twin.provenance or {}
    ok = ("<span class='verified'>reproduced bit for bit</span>" if verified else
          "<span class='not-verified'>NOT reproduced</span> (output hash differs or was not recorded)")
    parts.append("<h2>Provenance</h2>")
    parts.append(f"<p>A fresh run of this twin: {ok}.</p>")
    rows = [((k, v), False) for k, v in (("output SHA-256", expected or "—"),
                                         ("project version", prov.get("project_version", "—")),
                                         ("created", prov.get("created", "—")),
                                         ("platform", prov.get("platform", "—")),
                                         ("connectome", conn_name))]
    rows += [((f"package {k}", v), False) for k, v in sorted((prov.get("packages") or {}).items())]
    parts.append(_table(rows, ["item", "value"]))
    parts.append(f"<p style='font-size:14px;color:#666'>Built in {time.perf_counter() - t0:.1f} s.</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>")


def write_report(twin_path, out, overwrite: bool = False, title: str | None = None):
    """Write the report of the twin file ``twin_path`` to ``out`` (HTML; atomic, no silent replace)."""
    html_text = report_html(Twin.load(twin_path), title=title)
    return write_text(out, html_text, overwrite=overwrite)
