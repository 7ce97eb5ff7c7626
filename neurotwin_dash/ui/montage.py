"""Montage designer: place electrodes by name, set currents, see the field and the network effect.

* Electrodes are placed by their 10-10 name (``F3``, ``Fp2``...) with a current in mA; the
  stimulator's limits (per electrode, total injected, number of electrodes) are checked as you
  type and broken limits show inline, next to the field, without touching the last valid montage.
* The field of the montage: normal component ``E_n`` per region on an axial brain map (positive
  depolarises), and a 3D picture on tvb-data's cortex (pyvista; matplotlib when VTK cannot
  render) — see :mod:`neurotwin_dash.ui.field3d`.
* "Optimize" runs the Stimweaver-style constrained least squares
  (:func:`neurotwin_dash.stimulation.optimize.optimize_montage`) for the chosen target regions.
* The simulated effect: the same network (LaNMM by default, gamma from its P2 population) with
  and without the montage (tACS at ``frequency_hz``) over ``n_seeds`` noise seeds in one batch,
  band power per region side by side, the spectrum of the targets, and each effect in the targets
  (band power, PSD at the stimulation frequency, phase locking to the waveform) as mean ± 95 % CI
  with its verdict ("indistinguishable from sham" when the CI contains 0).

All three computations run on the Dask client in the background (:class:`JobRunner`).
"""
from __future__ import annotations

import io
import json

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, LabelSet, LinearColorMapper, Range1d
from bokeh.palettes import Inferno256, RdBu11, interp_palette

from .. import catalog
from ..observe.heads import HEADS
from ..stimulation.coupling import STIM_PARAMS
from ..stimulation.effects import OUTCOMES, format_effect
from ..stimulation.montage import Limits, Montage, MontageError, canonical_name
from . import panes
from .compute import BANDS, montage_effect_job, montage_field_job, netcdf_bytes, optimize_job
from .state import JobRunner, StagedResult, available_models, paramset_class, serve_page, values_of
from .widgets import NumberBox, busy_indicator, error_alert, paramset_widgets

__all__ = ["MontageState", "MontageDesigner", "ElectrodePlot", "effect_summary", "servable"]


class MontageState(param.Parameterized):
    """The montage being designed and everything its computations need."""

    connectome = param.Selector(default="tvb76", objects=["tvb76"],
                                doc="Connectome whose regions receive the field (3D view: tvb76 only)")
    layout = param.Selector(default="standard_1020", objects=["standard_1020"],
                            doc="Electrode positions (10-20/10-10 names)")
    head = param.Selector(default="sphere", objects=list(HEADS),
                          doc="Head model of the fields: four-shell sphere (3D cortex view) or the template BEM")
    currents_mA = param.Dict(default={"F3": 2.0, "Fp2": -2.0},
                             doc="Current per electrode in mA (positive = anode); they sum to zero")
    return_electrode = param.String(default="", doc="Electrode that takes the net current of the others ('' = none)")
    max_current_mA = param.Number(default=2.0, bounds=(0.1, 10.0), doc="Per-electrode limit |I| (mA)")
    max_total_mA = param.Number(default=4.0, bounds=(0.1, 20.0), doc="Total injected current limit (mA)")
    max_electrodes = param.Integer(default=8, bounds=(2, 64), doc="Largest number of active electrodes")
    frequency_hz = param.Number(default=40.0, bounds=(0.0, 100.0), step=1.0, label="tACS frequency (Hz)",
                                doc="Stimulation frequency; 0 means tDCS (constant current)")
    model = param.Selector(default="lanmm", objects=["lanmm"], doc="Neural mass model of the effect simulation")
    output = param.String(default="v_p2", doc="Model output whose band power is shown (LaNMM: v_p2 carries gamma)")
    band = param.Selector(default="low_gamma", objects=list(BANDS), doc="Band of the effect maps")
    duration_s = param.Number(default=2.0, bounds=(0.5, 30.0), step=0.5, label="duration (s)",
                              doc="Simulated time analysed per condition")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1),
                         doc="First noise seed; pair k (sham and stimulated) shares seed + k")
    n_seeds = param.Integer(default=5, bounds=(2, 20), label="noise seeds",
                            doc="Sham/stimulated pairs the effect and its 95 % CI are estimated from (one batch)")
    coupling = param.Number(default=1.0, bounds=(0.0, 50.0), step=0.1, doc="Global coupling of the network")
    targets = param.ListSelector(default=["lPFCDL"], objects=[], label="target regions",
                                 doc="Regions the optimization targets and the effect summary averages")
    target_En_V_m = param.Number(default=0.5, bounds=(-2.0, 2.0), step=0.05, label="target E_n (V/m)",
                                 doc="Desired normal field in the targets (positive depolarises)")
    stim_params = param.Parameter(doc="Stimulation coupling λ (stimulation.coupling.STIM_PARAMS)")
    error = param.String(default="", doc="Why the current montage is not valid ('' when it is)")

    def __init__(self, mode: str = "dask", **params):
        self.param.connectome.objects = [n for n in catalog.names("connectome")]
        self.param.layout.objects = [n for n in catalog.names("montage")]
        self.param.model.objects = available_models()
        super().__init__(**params)
        self.stim_params = paramset_class(STIM_PARAMS, "StimParams")()
        self.field_runner = JobRunner(mode=mode)
        self.effect_runner = JobRunner(mode=mode)
        self.opt_runner = JobRunner(mode=mode)
        self.auto_run = True
        self._refresh_regions()
        self.param.watch(self._refresh_regions, ["connectome"])
        self.param.watch(self._on_return, ["return_electrode"])
        self.param.watch(self._on_montage, ["currents_mA", "return_electrode", "max_current_mA",
                                            "max_total_mA", "max_electrodes", "connectome", "layout", "head"])
        self.param.watch(self._on_effect_input, ["frequency_hz", "model", "output", "band", "duration_s",
                                                 "seed", "coupling", "targets"])
        self.stim_params.param.watch(self._on_effect_input, ["stim_lambda_mV_per_V_m"])
        self.opt_runner.param.watch(self._on_optimized, "result")

    # --- the montage -------------------------------------------------------------------------
    def limits(self):
        return Limits(max_current_mA=self.max_current_mA, max_total_mA=self.max_total_mA,
                      max_electrodes=self.max_electrodes)

    def montage(self):
        """The current :class:`~neurotwin_dash.stimulation.montage.Montage` (raises when invalid)."""
        return Montage(dict(self.currents_mA), layout=self.layout,
                       return_electrode=self.return_electrode or None, limits=self.limits())

    def validate(self) -> str:
        """Check the montage; sets and returns :attr:`error` ('' when valid)."""
        try:
            self.montage()
        except (MontageError, ValueError) as exc:
            self.error = str(exc)
        else:
            self.error = ""
        return self.error

    def canonical(self, name: str) -> str:
        """The layout's spelling of an electrode name; raises naming the layout when unknown."""
        return canonical_name(name.strip(), self.layout)

    def set_current(self, electrode: str, current_mA: float) -> None:
        """Set one electrode's current (0 removes it); the montage is re-validated."""
        name = self.canonical(electrode)
        cur = dict(self.currents_mA)
        if current_mA == 0:
            cur.pop(name, None)
        else:
            cur[name] = float(current_mA)
        self.currents_mA = cur

    def spec(self) -> dict:
        out = {
            "connectome": self.connectome, "layout": self.layout, "currents_mA": dict(self.currents_mA),
            "return_electrode": self.return_electrode or None,
            "limits": {"max_current_mA": self.max_current_mA, "max_total_mA": self.max_total_mA,
                       "max_electrodes": self.max_electrodes},
            "model": self.model, "output": self.output or None, "band": self.band,
            "params": {"coupling": self.coupling}, "duration_s": self.duration_s, "transient_s": 0.5,
            "seed": self.seed, "n_seeds": self.n_seeds, "targets": list(self.targets),
            "frequency_hz": self.frequency_hz,
            "stim_lambda_mV_per_V_m": values_of(self.stim_params)["stim_lambda_mV_per_V_m"],
            "target_En_V_m": self.target_En_V_m, "render_3d": self.connectome == "tvb76",
            "head": self.head,
        }
        return out

    # --- actions -----------------------------------------------------------------------------
    def run_field(self):
        if not self.validate():
            self.field_runner.submit(montage_field_job, self.spec())

    def run_effect(self):
        if not self.validate():
            self.effect_runner.submit(montage_effect_job, self.spec())

    def run_all(self):
        self.run_field()
        self.run_effect()

    def optimize(self):
        if not self.targets:
            self.error = "optimization: choose at least one target region"
            return
        self.opt_runner.submit(optimize_job, self.spec())

    # --- watchers ----------------------------------------------------------------------------
    def _refresh_regions(self, *events):
        labels = catalog.load_connectome(self.connectome).labels
        self.param.targets.objects = labels
        kept = [t for t in self.targets if t in labels]
        if kept != list(self.targets):
            self.targets = kept

    def _on_return(self, event):
        """A return electrode takes the net current: drop a current given to it before."""
        name = event.new.strip()
        if not name:
            return
        try:
            name = self.canonical(name)
        except ValueError:
            return                                   # reported by validate()
        if name in self.currents_mA:
            with param.parameterized.discard_events(self):
                self.currents_mA = {k: v for k, v in self.currents_mA.items() if k != name}

    def _on_montage(self, *events):
        if self.auto_run:
            self.run_all()
        else:
            self.validate()

    def _on_effect_input(self, *events):
        if self.auto_run:
            self.run_effect()

    def _on_optimized(self, event):
        if event.new:
            self.return_electrode = ""
            self.currents_mA = dict(event.new["currents_mA"])


class ElectrodePlot:
    """The scalp seen from above: every electrode of the layout, active ones coloured by current."""

    name = "electrodes"

    def __init__(self):
        fig = panes._base_figure(self.name, "Electrodes (waiting…)", "", "", frame_width=300, frame_height=300,
                                 x_range=Range1d(-1.3, 1.3), y_range=Range1d(-1.3, 1.3))
        fig.axis.visible = False
        fig.grid.visible = False
        t = np.linspace(0, 2 * np.pi, 101)
        fig.line(np.cos(t), np.sin(t), color="black", line_width=1.5)
        fig.line([-0.12, 0.0, 0.12], [0.993, 1.12, 0.993], color="black", line_width=1.5)
        self.all = ColumnDataSource({"x": [], "y": [], "name": []})
        r0 = fig.scatter("x", "y", source=self.all, size=6, color="#bbb")
        self.mapper = LinearColorMapper(palette=list(interp_palette(RdBu11, 256)), low=-2, high=2)
        self.active = ColumnDataSource({"x": [], "y": [], "name": [], "current": [], "size": [], "label": []})
        r1 = fig.scatter("x", "y", source=self.active, size="size", line_color="black",
                         fill_color={"field": "current", "transform": self.mapper})
        fig.add_layout(LabelSet(x="x", y="y", text="label", source=self.active, x_offset=8, y_offset=6,
                                text_font_size="9pt"))
        fig.add_tools(HoverTool(renderers=[r0, r1], tooltips=[("electrode", "@name")]))
        self.figure = fig

    def update(self, res, limit_mA: float = 2.0):
        if res is None:
            return
        xy = res["electrode_xy"].values
        names = [str(s) for s in res["electrode"].values]
        cur = res["current_mA"].values
        self.all.data = {"x": xy[:, 0], "y": xy[:, 1], "name": names}
        on = np.abs(cur) > 0
        self.mapper.low, self.mapper.high = -limit_mA, limit_mA
        self.active.data = {
            "x": xy[on, 0], "y": xy[on, 1], "name": list(np.array(names)[on]), "current": cur[on],
            "size": 10 + 8 * np.abs(cur[on]) / max(limit_mA, 1e-9),
            "label": [f"{n} {c:+.2f} mA" for n, c in zip(np.array(names)[on], cur[on])],
        }
        self.figure.title.text = f"Electrodes ({int(on.sum())} active, {res.attrs['total_injected_mA']:.2f} mA injected)"


class MontageDesigner(pn.viewable.Viewer):
    """Controls and plots of the montage designer (one per session)."""

    def __init__(self, state: MontageState | None = None, mode: str = "dask", **params):
        super().__init__(**params)
        self.state = s = state or MontageState(mode=mode)
        # --- inputs
        self.electrode = pn.widgets.TextInput(label="electrode (10-10 name)", value="C3", width=150,
                                              css_classes=["electrode-name"])
        self.current = NumberBox("current at electrode", 1.0, -s.max_current_mA, s.max_current_mA, unit="mA")
        self.set_button = pn.widgets.Button(label="Set current", color="primary", width=120)
        self.set_button.on_click(self._set_current)
        self.input_error = error_alert()
        self.montage_error = error_alert()
        s.param.watch(self._show_montage_error, "error")
        s.param.watch(self._on_limit, ["max_current_mA"])
        self.opt_button = pn.widgets.Button(label="Optimize for targets", color="success", width=180)
        self.opt_button.on_click(lambda e: s.optimize())
        self.opt_error = error_alert()
        s.opt_runner.param.watch(lambda e: self._alert(self.opt_error, e.new and f"Optimization failed: {e.new}"),
                                 "error")
        s.field_runner.param.watch(lambda e: self._alert(self.montage_error, e.new and f"Field failed: {e.new}"),
                                   "error")
        self.effect_error = error_alert()
        s.effect_runner.param.watch(lambda e: self._alert(self.effect_error, e.new and f"Simulation failed: {e.new}"),
                                    "error")
        # --- plots
        self.electrodes = ElectrodePlot()
        self.field_map = panes.BrainMapPlot("field-map", list(panes._RDBU), "E_n (V/m)", symmetric=True,
                                            title="Normal field per region (waiting…)")
        self.sham_map = panes.BrainMapPlot("effect-sham", Inferno256, "log10 power", title="No stimulation (waiting…)")
        self.stim_map = panes.BrainMapPlot("effect-stim", Inferno256, "log10 power", title="Stimulation (waiting…)")
        self.effect_spectra = _EffectSpectra()
        self.field3d = pn.pane.PNG(None, width=460, height=420, css_classes=["field-3d"])
        self.field_text = pn.pane.Markdown("", css_classes=["field-summary"])
        self.effect_text = pn.pane.Markdown("", css_classes=["effect-summary"])
        self.field_spinner = busy_indicator(s.field_runner.param.busy, size=24, css_classes=())
        self.effect_spinner = busy_indicator(s.effect_runner.param.busy, size=24, css_classes=())
        # take away: the montage (JSON, re-loadable with Montage.load), its field and the effect (netCDF)
        self.downloads = {
            "montage.json": pn.widgets.FileDownload(callback=self._montage_file, filename="montage.json",
                                                    label="Download montage (JSON)", css_classes=["download-montage"],
                                                    sizing_mode="stretch_width"),
            "field.nc": pn.widgets.FileDownload(callback=lambda: self._result_file(s.field_runner), filename="field.nc",
                                                label="Download field (netCDF)", css_classes=["download-field"],
                                                sizing_mode="stretch_width"),
            "effect.nc": pn.widgets.FileDownload(callback=lambda: self._result_file(s.effect_runner),
                                                 filename="effect.nc", label="Download effect (netCDF)",
                                                 css_classes=["download-effect"], sizing_mode="stretch_width")}
        self.staged_field = StagedResult(s.field_runner, "result", ["electrodes", "field_map", "field3d"])
        self.staged_field.param.watch(lambda e: self.electrodes.update(e.new, s.max_current_mA), "electrodes")
        self.staged_field.param.watch(lambda e: self._show_field(e.new), "field_map")
        self.staged_field.param.watch(lambda e: self._show_3d(e.new), "field3d")
        self.staged_effect = StagedResult(s.effect_runner, "result", ["maps", "spectra"])
        self.staged_effect.param.watch(lambda e: self._show_effect(e.new), "maps")
        self.staged_effect.param.watch(lambda e: self.effect_spectra.update(e.new), "spectra")

    # --- callbacks -----------------------------------------------------------------------------
    def _montage_file(self):
        return io.BytesIO(json.dumps(self.state.montage().to_dict(), indent=1).encode())

    @staticmethod
    def _result_file(runner):
        """The runner's latest result as netCDF (pictures and other non-numeric attrs left out)."""
        if runner.result is None:
            return None
        ds = runner.result.copy()
        ds.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float, np.number))}
        return io.BytesIO(netcdf_bytes(ds))

    @staticmethod
    def _alert(alert, text):
        alert.object = text or ""
        alert.visible = bool(text)

    def _show_montage_error(self, event):
        self._alert(self.montage_error, event.new and f"Montage not valid: {event.new}")

    def _on_limit(self, event):
        self.current.low, self.current.high = -event.new, event.new

    def _set_current(self, event=None):
        msg = self.current.error
        if not msg:
            try:
                self.state.set_current(self.electrode.value, self.current.value)
            except ValueError as exc:
                msg = str(exc)
        self._alert(self.input_error, msg)

    def _show_field(self, res):
        if res is None:
            return
        d = {"x": res["centres"].values[:, 0], "y": res["centres"].values[:, 1], "power": res["E_n"].values,
             "region": [str(r) for r in res["region"].values]}
        self.field_map.show(d, f"Normal field E_n per region (max |E_n| {res.attrs['max_abs_En']:.2f} V/m)")
        cur = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(_loads(res.attrs["montage"]).items()))
        self.field_text.object = (f"**Montage** (mA): {cur}.  \nTotal injected {res.attrs['total_injected_mA']:.2f} mA; "
                                  f"max |E| {res.attrs['max_Emag']:.3f} V/m at the regions.")

    def _show_3d(self, res):
        if res is None:
            return
        png = res.attrs.get("png_3d")
        self.field3d.object = png if png else None
        self.field3d.alt_text = res.attrs.get("backend_3d", res.attrs.get("note_3d", ""))

    def _show_effect(self, res):
        if res is None:
            return
        bp = np.log10(np.maximum(res["band_power"].values, 1e-30))
        lims = panes._limits(bp.ravel())
        c = res["centres"].values
        regions = [str(r) for r in res["region"].values]
        band = res.attrs["band"]
        for plot, k, title in ((self.sham_map, 0, "No stimulation"), (self.stim_map, 1, "Stimulation")):
            plot.show({"x": c[:, 0], "y": c[:, 1], "power": bp[k], "region": regions},
                      f"{title}: {band} power of {res.attrs['output']} (mean of {res.attrs['n_seeds']} seeds)",
                      limits=lims)
        self.effect_text.object = effect_summary(res)

    # --- layout --------------------------------------------------------------------------------
    def controls(self) -> pn.Column:
        s = self.state
        place = pn.Card(
            pn.Row(self.electrode, self.current), self.set_button, self.input_error,
            pn.widgets.TextInput.from_param(s.param.return_electrode, label="return electrode (optional)"),
            pn.widgets.Select.from_param(s.param.layout),
            pn.widgets.Select.from_param(s.param.head, name="head model"),
            title="Electrodes", sizing_mode="stretch_width")
        limits = pn.Card(
            pn.widgets.FloatInput.from_param(s.param.max_current_mA, label="max current per electrode (mA)"),
            pn.widgets.FloatInput.from_param(s.param.max_total_mA, label="max total injected (mA)"),
            pn.widgets.IntInput.from_param(s.param.max_electrodes, label="max electrodes"),
            title="Stimulator limits", sizing_mode="stretch_width", collapsed=True)
        opt = pn.Card(
            pn.widgets.MultiChoice.from_param(s.param.targets, sizing_mode="stretch_width"),
            pn.widgets.FloatSlider.from_param(s.param.target_En_V_m, throttled=True, sizing_mode="stretch_width"),
            self.opt_button, self.opt_error, title="Optimization", sizing_mode="stretch_width")
        effect = pn.Card(
            pn.widgets.FloatSlider.from_param(s.param.frequency_hz, throttled=True, sizing_mode="stretch_width",
                                              css_classes=["param-frequency_hz"]),
            *paramset_widgets(s.stim_params),
            pn.widgets.Select.from_param(s.param.model),
            pn.widgets.TextInput.from_param(s.param.output),
            pn.widgets.Select.from_param(s.param.band),
            pn.widgets.FloatSlider.from_param(s.param.coupling, throttled=True, sizing_mode="stretch_width"),
            pn.widgets.FloatSlider.from_param(s.param.duration_s, throttled=True, sizing_mode="stretch_width"),
            pn.widgets.IntInput.from_param(s.param.n_seeds),
            pn.widgets.Select.from_param(s.param.connectome),
            title="Simulated effect", sizing_mode="stretch_width")
        takeaway = pn.Card(*self.downloads.values(), title="Take away", sizing_mode="stretch_width", collapsed=True)
        return pn.Column(place, limits, opt, effect, takeaway, sizing_mode="stretch_width")

    def main(self) -> pn.Column:
        return pn.Column(
            pn.Row(self.field_spinner, self.field_text), self.montage_error,
            pn.FlexBox(pn.pane.Bokeh(self.electrodes.figure), pn.pane.Bokeh(self.field_map.figure), self.field3d),
            pn.Row(self.effect_spinner, self.effect_text), self.effect_error,
            pn.FlexBox(pn.pane.Bokeh(self.sham_map.figure), pn.pane.Bokeh(self.stim_map.figure),
                       pn.pane.Bokeh(self.effect_spectra.figure)),
            sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.controls(), width=380), self.main(), sizing_mode="stretch_width")


def effect_summary(res) -> str:
    """The effect panel's text: every outcome as mean ± 95 % CI with its verdict and seed count."""
    n = int(res.attrs["n_seeds"])
    band = res.attrs["band"]
    where = res.attrs["targets"] or "all regions"
    hz = res.attrs["frequency_hz"]
    cur = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(_loads(res.attrs["montage"]).items()))
    names = {"band_power": f"{band} power in {where}", "power_at_f": f"PSD at {hz:g} Hz",
             "plv": f"phase locking to the {hz:g} Hz waveform"}
    lines = []
    for o in res["outcome"].values:
        e = res.sel(outcome=o)
        text = format_effect(e["effect"], e["ci_low"], e["ci_high"], n, OUTCOMES[str(o)][1])
        lines.append(f"**{names[str(o)]}: {text}**" if o == "band_power" else f"{names[str(o)]}: {text}")
    lines[0] += f" ({100 * res.attrs['relative_change_targets']:+.1f} % of sham's mean)"
    return ("  \n".join(lines) + f"  \nStimulated − sham, paired by noise seed ({n} seeds, "
            f"{res.attrs.get('seeds', '')}, one batch) with "
            f"{'tACS at %g Hz' % hz if hz > 0 else 'tDCS'} through {cur} mA (job {res.attrs['elapsed_s']:.1f} s)."
            + ("  \n**Diverged.**" if res.attrs.get("diverged") else ""))


def _loads(text: str) -> dict:
    return json.loads(text)


class _EffectSpectra:
    """Spectrum of the target regions with and without stimulation."""

    name = "effect-spectra"

    def __init__(self):
        fig = panes._base_figure(self.name, "Target spectrum (waiting…)", "frequency (Hz)", "log10 PSD (mV²/Hz)")
        self.sham = ColumnDataSource({"x": [], "y": []})
        self.stim = ColumnDataSource({"x": [], "y": []})
        fig.line("x", "y", source=self.sham, color="black", line_width=2, legend_label="no stimulation")
        fig.line("x", "y", source=self.stim, color="#d62728", line_width=2, legend_label="stimulation")
        fig.legend.location = "top_right"
        self.figure = fig

    def update(self, res):
        if res is None:
            return
        f = res["frequency"].values
        lp = np.log10(np.maximum(res["psd_target"].values, 1e-30))
        self.sham.data = {"x": f, "y": lp[0]}
        self.stim.data = {"x": f, "y": lp[1]}
        where = res.attrs["targets"] or "all regions"
        self.figure.title.text = f"Spectrum of {res.attrs['output']} in {where}"


def servable(mode: str = "dask"):
    """Build one session's montage designer page (``panel serve apps/montage.py``)."""
    pn.extension(throttled=True, notifications=False)
    designer = MontageDesigner(mode=mode)
    return serve_page("neurotwin montage designer", designer, on_load=designer.state.run_all)
