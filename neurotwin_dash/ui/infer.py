"""Inference dashboard: a trained posterior, an observation, the posterior live (``/infer``).

:class:`InferViewer` is a :class:`panel.viewable.Viewer` (served by ``neurotwin serve`` and usable
in a notebook):

* pick a trained posterior (directories written by :meth:`neurotwin_dash.infer.Posterior.save`,
  found in the folders of ``$NEUROTWIN_POSTERIORS`` — ``os.pathsep``-separated — or ``./posteriors``);
* load an observation: **sliders over the features** (one per feature, over ±3 sd of the
  training set), or **a simulation** at chosen parameter values (sliders over the prior range,
  or a random prior draw), whose features then set the feature sliders and whose parameters are
  marked as the truth on the plots;
* see the marginal posterior of every parameter (histogram over its prior range), the pairwise
  posteriors (draws), the posterior predictive spectrum (a few posterior draws simulated again,
  with the observation's log-PSD features on top) and the posterior's calibration table;
* download the current posterior draws with the observation and the calibration (netCDF,
  :meth:`InferViewer.samples_dataset`) and the trained posterior itself (a zip of its directory:
  ``posterior.json`` + ``weights.safetensors``, no pickle; unzip and :meth:`Posterior.load
  <neurotwin_dash.infer.Posterior.load>` it).

Sampling 1,000 draws takes a few milliseconds, so a feature change redraws the posterior at
once; the predictive draws are short single-node simulations (tens of milliseconds).
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.models import ColumnDataSource, Range1d, Span
from bokeh.plotting import figure

from ..infer import InferError, Posterior
from ..infer.features import compute_features
from ..infer.usecases import PRESETS
from .compute import netcdf_bytes
from .state import serve_page
from .widgets import error_alert

__all__ = ["InferViewer", "posterior_dirs", "find_posteriors", "servable", "marginal_data", "pair_data"]

_BINS = 30


def posterior_dirs() -> list[Path]:
    """Folders searched for trained posteriors: ``$NEUROTWIN_POSTERIORS`` or ``./posteriors``."""
    env = os.environ.get("NEUROTWIN_POSTERIORS", "")
    return [Path(p) for p in env.split(os.pathsep) if p] if env else [Path.cwd() / "posteriors"]


def find_posteriors(dirs=None) -> dict[str, Path]:
    """``{name: path}`` of the posterior directories in ``dirs`` (a folder may itself be one)."""
    out = {}
    for d in dirs if dirs is not None else posterior_dirs():
        d = Path(d)
        cands = [d] if (d / "posterior.json").is_file() else sorted(d.glob("*/posterior.json")) if d.is_dir() else []
        for c in cands:
            p = c if c.is_dir() else c.parent
            out[p.name] = p
    return out


def _figure(name, title, x_label, y_label, width=300, height=230):
    fig = figure(name=name, title=title, x_axis_label=x_label, y_axis_label=y_label, width=width,
                 height=height, tools="pan,wheel_zoom,box_zoom,reset,save", css_classes=[f"plot-{name}"])
    fig.toolbar.logo = None
    return fig


def _css(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def marginal_data(draws: np.ndarray, low: float, high: float, log: bool = False, bins: int = _BINS) -> dict:
    """Histogram (density) of one parameter's draws over its prior range, as quad columns."""
    edges = np.geomspace(low, high, bins + 1) if log else np.linspace(low, high, bins + 1)
    counts, _ = np.histogram(draws, bins=edges)
    dens = counts / max(counts.sum(), 1) / np.diff(edges)
    return {"left": edges[:-1], "right": edges[1:], "top": dens, "bottom": np.zeros_like(dens)}


def pair_data(draws: np.ndarray, i: int, j: int, max_points: int = 600) -> dict:
    """The first ``max_points`` draws of parameters i and j (a scatter of the joint posterior)."""
    d = draws[:max_points]
    return {"x": d[:, i], "y": d[:, j]}


class InferViewer(pn.viewable.Viewer):
    """Posterior dashboard over one observation at a time (one per session).

    Parameters
    ----------
    posterior : Posterior, path, or None
        A posterior to show; None picks the first found by :func:`find_posteriors`.
    dirs : list of paths, optional
        Folders searched for posteriors (default :func:`posterior_dirs`).
    n_draws : int
        Posterior draws per update.
    predictive_draws : int
        Posterior draws simulated again for the predictive spectrum (0: none).
    """

    observed = param.Dict(default={}, doc="feature name -> value of the current observation")

    def __init__(self, posterior=None, dirs=None, n_draws: int = 1000, predictive_draws: int = 8,
                 predictive_duration_s: float = 6.0, seed: int = 0, **params):
        super().__init__(**params)
        self.n_draws, self.predictive_draws = int(n_draws), int(predictive_draws)
        self.predictive_duration_s, self.seed = float(predictive_duration_s), int(seed)
        self._dirs = [Path(d) for d in dirs] if dirs is not None else posterior_dirs()
        self.available = find_posteriors(self._dirs)
        if isinstance(posterior, Posterior):
            self.available = {posterior.spec.name or "posterior": posterior, **self.available}
        elif posterior is not None:
            self.available = {Path(posterior).name: Path(posterior), **self.available}
        self.error = error_alert()
        self.picker = pn.widgets.Select(name="trained posterior", options=list(self.available),
                                        sizing_mode="stretch_width", css_classes=["posterior-picker"])
        self.summary = pn.pane.Markdown("", css_classes=["infer-summary"], sizing_mode="stretch_width")
        self.calibration = pn.pane.Markdown("", css_classes=["infer-calibration"], sizing_mode="stretch_width")
        self.feature_box = pn.Column(sizing_mode="stretch_width")
        self.param_box = pn.Column(sizing_mode="stretch_width")
        self.simulate_button = pn.widgets.Button(name="Simulate these parameters", button_type="success")
        self.random_button = pn.widgets.Button(name="Random prior draw")
        self.simulate_button.on_click(lambda e: self.observe_simulation())
        self.random_button.on_click(lambda e: self.observe_prior_draw())
        self.grid = pn.GridBox(ncols=3, sizing_mode="stretch_width")
        self.predictive_pane = pn.Column()
        self.downloads = {
            "samples": pn.widgets.FileDownload(callback=self._samples_file, filename="posterior-samples.nc",
                                               label="Download draws (netCDF)",
                                               css_classes=["download-samples"], sizing_mode="stretch_width"),
            "posterior": pn.widgets.FileDownload(callback=self._posterior_file, filename="posterior.zip",
                                                 label="Download posterior (zip)",
                                                 css_classes=["download-posterior"], sizing_mode="stretch_width")}
        self.truth: np.ndarray | None = None
        self.draws: np.ndarray | None = None
        self.last_update_s = float("nan")
        self._updating = False
        self.picker.param.watch(lambda e: self.load(e.new), "value")
        if self.available:
            self.load(self.picker.value)

    # --- posterior ---------------------------------------------------------------------------------
    def load(self, name) -> None:
        """Show the posterior ``name`` (a key of :attr:`available`)."""
        src = self.available[name]
        try:
            self.posterior = src if isinstance(src, Posterior) else Posterior.load(src)
        except (InferError, OSError, ValueError) as exc:
            self._show_error(f"cannot load posterior {name!r}: {exc}")
            return
        post = self.posterior
        info = post.info
        mean = np.asarray(info.get("feature_mean", np.zeros(len(post.feature_names))))
        sd = np.asarray(info.get("feature_sd", np.ones(len(post.feature_names))))
        self.feature_sliders = {}
        for k, name_k in enumerate(post.feature_names):
            lo, hi = float(mean[k] - 3 * sd[k]), float(mean[k] + 3 * sd[k])
            step = (hi - lo) / 200 if hi > lo else 0.01
            s = pn.widgets.FloatSlider(name=name_k, start=lo, end=hi, step=step, value=float(mean[k]),
                                       css_classes=["feature-slider", f"feature-{_css(name_k)}"],
                                       sizing_mode="stretch_width", format="0[.][000]")
            s.param.watch(self._on_feature, "value_throttled")
            self.feature_sliders[name_k] = s
        self.feature_box.objects = list(self.feature_sliders.values())
        self.param_sliders = {}
        for p in post.prior.params:
            s = pn.widgets.FloatSlider(name=f"{p.label} ({p.unit})" if p.unit else p.label, start=p.low,
                                       end=p.high, step=(p.high - p.low) / 200, value=p.mean(),
                                       css_classes=[f"param-{_css(p.name)}"], sizing_mode="stretch_width")
            self.param_sliders[p.name] = s
        self.param_box.objects = list(self.param_sliders.values())
        self._build_plots()
        self.calibration.object = "#### Calibration (held-out simulations)\n\n" + post.calibration_table()
        self.truth = None
        self.observe_simulation()

    def _build_plots(self):
        post = self.posterior
        params = post.prior.params
        self.marg_src, self.pair_src, figs = [], {}, []
        for p in params:
            f = _figure(f"infer-marginal-{_css(p.name)}", f"p({p.label} | x)", p.label + (f" ({p.unit})" if p.unit else ""),
                        "density", )
            f.x_range = Range1d(p.low, p.high)
            src = ColumnDataSource(marginal_data(np.array([]), p.low, p.high, p.log))
            f.quad(left="left", right="right", top="top", bottom="bottom", source=src, fill_color="#1f77b4",
                   fill_alpha=0.6, line_color="#1f77b4")
            span = Span(location=p.mean(), dimension="height", line_color="#d62728", line_width=2, visible=False)
            f.add_layout(span)
            self.marg_src.append((src, span))
            figs.append(f)
        for i in range(len(params)):
            for j in range(i + 1, len(params)):
                pi, pj = params[i], params[j]
                f = _figure(f"infer-pair-{_css(pi.name)}-{_css(pj.name)}", f"{pi.label} vs {pj.label}", pi.label, pj.label)
                f.x_range, f.y_range = Range1d(pi.low, pi.high), Range1d(pj.low, pj.high)
                src = ColumnDataSource({"x": [], "y": []})
                f.scatter("x", "y", source=src, size=3, alpha=0.3, color="#1f77b4")
                tsrc = ColumnDataSource({"x": [], "y": []})
                f.scatter("x", "y", source=tsrc, size=12, marker="x", line_width=3, color="#d62728")
                self.pair_src[(i, j)] = (src, tsrc)
                figs.append(f)
        self.grid.objects = [pn.pane.Bokeh(f) for f in figs]
        pf = _figure("infer-predictive", "posterior predictive spectrum", "frequency (Hz)", "log10 PSD",
                     width=620, height=300)
        self.pred_src = ColumnDataSource({"x": [], "y": []})
        pf.line("x", "y", source=self.pred_src, color="#1f77b4", alpha=0.5, legend_label="posterior draws")
        self.obs_src = ColumnDataSource({"x": [], "y": []})
        pf.scatter("x", "y", source=self.obs_src, size=9, color="#d62728", legend_label="observation")
        pf.legend.location = "top_right"
        self.predictive_fig = pf
        self.predictive_pane.objects = [pn.pane.Bokeh(pf)]

    # --- observations ------------------------------------------------------------------------------
    def _on_feature(self, event):
        if not self._updating:
            self.truth = None
            self.update({k: float(s.value) for k, s in self.feature_sliders.items()})

    def set_features(self, values: dict) -> None:
        """Set the feature sliders (clipped to their range) and update the posterior."""
        self._updating = True
        try:
            for k, v in values.items():
                s = self.feature_sliders[k]
                s.value = float(np.clip(v, s.start, s.end))
        finally:
            self._updating = False
        self.update(dict(values))

    def observe_simulation(self, theta=None, seed: int | None = None) -> dict:
        """Simulate θ (default: the parameter sliders) and observe its features."""
        post = self.posterior
        if theta is None:
            theta = [self.param_sliders[n].value for n in post.param_names]
        theta = np.asarray(theta, dtype=float)
        res = post.simulate_draws(theta[None, :], seed=self.seed if seed is None else seed)
        feats = compute_features(res, post.spec.features, connectome=post.spec.connectome).isel(batch=0)
        values = {str(k): float(v) for k, v in zip(feats.feature.values, feats.values)}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
            self._show_error(f"the simulation gave non-finite features {bad} (diverged or silent)")
            return values
        self.truth = theta
        self.set_features(values)
        return values

    def observe_prior_draw(self, seed: int | None = None) -> dict:
        """A random parameter set from the prior, simulated and observed (its θ shown as truth)."""
        rng_seed = int(time.time() * 1e3) % 2**31 if seed is None else seed
        theta = self.posterior.prior.sample(1, rng_seed)[0]
        for n, v in zip(self.posterior.param_names, theta):
            self.param_sliders[n].value = float(v)
        return self.observe_simulation(theta, seed=rng_seed)

    # --- update ------------------------------------------------------------------------------------
    def update(self, values: dict) -> None:
        """Sample the posterior for ``values`` and redraw every plot."""
        t0 = time.perf_counter()
        post = self.posterior
        try:
            draws = post.sample(values, self.n_draws, seed=self.seed)
        except InferError as exc:
            self._show_error(str(exc))
            return
        self._show_error("")
        self.observed = dict(values)
        self.draws = draws
        for k, (p, (src, span)) in enumerate(zip(post.prior.params, self.marg_src)):
            src.data = marginal_data(draws[:, k], p.low, p.high, p.log)
            if self.truth is not None:
                span.location, span.visible = float(self.truth[k]), True
            else:
                span.visible = False
        for (i, j), (src, tsrc) in self.pair_src.items():
            src.data = pair_data(draws, i, j)
            tsrc.data = ({"x": [float(self.truth[i])], "y": [float(self.truth[j])]} if self.truth is not None
                         else {"x": [], "y": []})
        self._update_predictive(values)
        self.summary.object = self._summary_text(draws)
        self.last_update_s = time.perf_counter() - t0

    def _update_predictive(self, values):
        post = self.posterior
        psd_feats = [(float(m.group(1)), v) for k, v in values.items()
                     if (m := re.fullmatch(r"log_psd_([0-9.]+)Hz", k))]
        if self.predictive_draws > 0:
            pred = post.predictive(values, n=self.predictive_draws, seed=self.seed,
                                   duration_s=min(self.predictive_duration_s, post.spec.duration_s))
            lp = pred["log_psd"].values
            x = np.tile(np.append(pred.frequency.values, np.nan), lp.shape[0])
            y = np.column_stack([lp, np.full(lp.shape[0], np.nan)]).ravel()
            self.pred_src.data = {"x": x, "y": y}
        self.obs_src.data = {"x": [f for f, _ in psd_feats], "y": [v for _, v in psd_feats]}

    def _summary_text(self, draws) -> str:
        post = self.posterior
        rows = ["| parameter | posterior mean | 90 % interval | truth | shrinkage |", "|---|---|---|---|---|"]
        z = post.prior.to_z(draws)
        for k, p in enumerate(post.prior.params):
            q = np.quantile(draws[:, k], [0.05, 0.95])
            truth = f"{self.truth[k]:.4g}" if self.truth is not None else "–"
            shrink = 1 - z[:, k].var() / p.z_sd() ** 2
            rows.append(f"| {p.label} | {draws[:, k].mean():.4g} | {q[0]:.4g} – {q[1]:.4g} | {truth} | {shrink:.2f} |")
        head = (f"**{self.picker.value}** — {post.spec.model}, {len(post.feature_names)} features, "
                f"{post.info.get('n_train', '?')} training simulations "
                f"({100 * post.info.get('diverged_fraction', 0):.1f} % diverged, excluded)")
        source = ("a simulation at the parameter sliders (truth in red)" if self.truth is not None
                  else "the feature sliders")
        return head + f"\n\nObservation: {source}.\n\n" + "\n".join(rows)

    # --- downloads -----------------------------------------------------------------------------------
    def samples_dataset(self) -> xr.Dataset | None:
        """The posterior on screen as a Dataset (None before the first update).

        One variable per parameter (dim ``draw``, its unit; attr ``truth`` when the observation is
        a simulation), ``observed`` (the observation's features, dim ``feature``; per-feature
        units in the ``feature_units`` coordinate) and, when the posterior holds its held-out
        calibration, ``calibration_coverage`` (param, level), ``calibration_shrinkage``,
        ``calibration_z_score``, ``calibration_identifiable`` (param) and
        ``calibration_sbc_rank_hist`` (param, rank_bin). Attrs name the posterior, its spec and
        the draws' seed.
        """
        if self.draws is None:
            return None
        post = self.posterior
        data = {}
        for k, p in enumerate(post.prior.params):
            attrs = {"units": p.unit or "1", "long_name": f"posterior draws of {p.label}"}
            if self.truth is not None:
                attrs["truth"] = float(self.truth[k])
            data[p.name] = ("draw", self.draws[:, k], attrs)
        feats = list(post.feature_names)
        data["observed"] = ("feature", [float(self.observed[f]) for f in feats],
                            {"units": "1", "long_name": "the observation's features (units: feature_units)"})
        coords = {"draw": ("draw", np.arange(len(self.draws)), {"units": "1", "long_name": "posterior draw"}),
                  "feature": feats,
                  "feature_units": ("feature", ["Hz" if f.endswith("_hz") else "1" for f in feats])}
        cal = post.calibration
        if cal.get("params"):
            names = [p.name for p in post.prior.params]
            rows = [cal["params"][n] for n in names]
            levels = [float(lv) for lv in cal["levels"]]
            one = {"units": "1"}
            data["calibration_coverage"] = (("param", "level"), [[r["coverage"][str(lv)] for lv in cal["levels"]]
                                                                 for r in rows],
                                            {**one, "long_name": "fraction of held-out truths inside the central "
                                                                 "credible interval"})
            data["calibration_shrinkage"] = ("param", [r["shrinkage_mean"] for r in rows],
                                             {**one, "long_name": "mean 1 - var_post / var_prior"})
            data["calibration_z_score"] = ("param", [r["z_score_mean"] for r in rows],
                                           {**one, "long_name": "mean |posterior mean - truth| / posterior sd"})
            data["calibration_identifiable"] = ("param", np.array([r["identifiable"] for r in rows], dtype=np.int8),
                                                {**one, "long_name": "mean shrinkage >= 0.75 (1 = yes)"})
            data["calibration_sbc_rank_hist"] = (("param", "rank_bin"), [r["sbc_rank_hist"] for r in rows],
                                                 {**one, "long_name": "SBC rank histogram (counts)"})
            coords.update(param=names, level=("level", levels, {"units": "1"}))
        ds = xr.Dataset(data, coords=coords)
        ds.attrs.update({"posterior": str(self.picker.value), "model": post.spec.model, "seed": self.seed,
                         "observation": "simulation" if self.truth is not None else "feature sliders",
                         "spec": json.dumps(post.spec.to_dict()),
                         "calibration_held_out": int(cal.get("n", 0))})
        return ds

    def posterior_zip(self) -> bytes:
        """The trained posterior as a zip of its directory (``<name>/posterior.json`` and
        ``<name>/weights.safetensors``, written by :meth:`Posterior.save`)."""
        name = _css(str(self.picker.value)) or "posterior"
        with tempfile.TemporaryDirectory(prefix="neurotwin-export-") as tmp:
            folder = self.posterior.save(Path(tmp) / name)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(folder.iterdir()):
                    z.write(f, f"{name}/{f.name}")
        return buf.getvalue()

    def _samples_file(self):
        ds = self.samples_dataset()
        self.downloads["samples"].filename = f"{_css(str(self.picker.value))}-samples.nc"
        return io.BytesIO(netcdf_bytes(ds)) if ds is not None else None

    def _posterior_file(self):
        if not self.available:
            return None
        self.downloads["posterior"].filename = f"{_css(str(self.picker.value))}.zip"
        return io.BytesIO(self.posterior_zip())

    def _show_error(self, text: str) -> None:
        self.error.object = text
        self.error.visible = bool(text)

    # --- layout ------------------------------------------------------------------------------------
    def controls(self) -> pn.Column:
        if not self.available:
            return pn.Column(pn.pane.Markdown("No trained posterior yet: see the right-hand side."),
                             sizing_mode="stretch_width")
        return pn.Column(
            self.picker,
            pn.Card(self.param_box, pn.Row(self.simulate_button, self.random_button),
                    title="Observation: a simulation", sizing_mode="stretch_width"),
            pn.Card(self.feature_box, title="Observation: features", sizing_mode="stretch_width"),
            pn.Card(pn.pane.Markdown("The draws on screen with the observation and the held-out calibration; "
                                     "the trained posterior (JSON + safetensors, no pickle).",
                                     sizing_mode="stretch_width"),
                    *self.downloads.values(), title="Downloads", sizing_mode="stretch_width"),
            sizing_mode="stretch_width")

    def _how_to_train(self) -> pn.pane.Markdown:
        where = self._dirs or posterior_dirs()
        return pn.pane.Markdown(
            "### No trained posterior found\n\nLooked in " + ", ".join(f"`{d}`" for d in where)
            + " (the folders in `$NEUROTWIN_POSTERIORS`, default `./posteriors`). Train one from a terminal, "
            "then reload this page, e.g. the Jansen–Rit column use case (a few minutes on 2 cores):\n\n"
            f"```\nneurotwin infer-train --preset jansen_rit_column --workdir runs/jr --out {where[0] / 'jr'}\n```\n\n"
            f"Presets: {', '.join(f'`{k}`' for k in PRESETS)}; or `--spec spec.yaml` (an `InferSpec`), or in "
            "Python `neurotwin_dash.infer.train(spec, workdir).save(dir)`.",
            css_classes=["no-posterior"], sizing_mode="stretch_width")

    def main(self) -> pn.Column:
        if not self.available:
            return pn.Column(self._how_to_train(), sizing_mode="stretch_width")
        return pn.Column(self.error, self.summary, self.grid, self.predictive_pane, self.calibration,
                         sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.controls(), width=380), self.main(), sizing_mode="stretch_width")


def servable():
    """Build one session's inference page and mark it servable (``panel serve apps/infer.py``)."""
    pn.extension(notifications=False)
    viewer = InferViewer()
    return serve_page("neurotwin inference", viewer)
