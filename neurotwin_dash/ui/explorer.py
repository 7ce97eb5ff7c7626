"""Explorer dashboard: a model on a connectome, re-simulated in the background as you move sliders.

``Explorer`` is a :class:`panel.viewable.Viewer` over an :class:`~neurotwin_dash.ui.state.ExplorerState`:

* model picker and one slider per declared model parameter (range, unit and doc from the model's
  ``PARAMS``), network sliders (``simulate.NETWORK_PARAMS``: coupling, conduction speed);
* connectome picker (catalog) and edits: normalisation, weight scale, lesions, edge edits;
* duration, transient, seed, EEG montage, empirical FC;
* plots, in four tabs (:data:`PLOT_TABS`; only the open one is sent to the browser): region
  spectra, simulated EEG spectra; band power per region on an axial brain map (real region
  centres), EEG band-power topomap; FC (with the empirical FC and their fit when loaded), the
  structural weights used; EEG traces.

Each change submits one job to the Dask client (see :class:`~neurotwin_dash.ui.state.JobRunner`):
the page stays responsive, a spinner shows while it runs, and a newer change cancels an older run.
The URL query sets the initial state, e.g. ``/explorer?model=jansen_rit&connectome=tvb76&coupling=5``.
"""
from __future__ import annotations

import io
import math
from urllib.parse import urlencode

import numpy as np
import panel as pn

from . import panes
from .compute import explorer_export_job
from .state import ExplorerState, JobRunner, StagedResult, pause_gc_while_building, serve_page, values_of
from .widgets import NumberBox, busy_indicator, error_alert, paramset_widgets

__all__ = ["Explorer", "PLOT_TABS", "servable", "parse_query", "share_query"]

#: the explorer's plot tabs (title -> plot keys of :func:`panes.explorer_plots`), first one open
PLOT_TABS = {"Spectra": ("region_spectra", "sensor_spectra"), "Maps": ("brain_map", "topomap"),
             "Connectivity": ("fc_matrix", "weights"), "Traces": ("eeg_traces",)}


def parse_query(args: dict) -> dict:
    """Explorer settings from URL query arguments (``pn.state.session_args``: name -> [bytes]).

    Numbers become floats (``seed`` an int); lists (``lesions``) are comma-separated.
    """
    out = {}
    for key, vals in (args or {}).items():
        v = vals[-1] if isinstance(vals, (list, tuple)) else vals
        v = v.decode() if isinstance(v, bytes) else str(v)
        if key in ("model", "output", "connectome", "normalisation", "montage", "head", "empirical_fc", "band", "map_band",
                   "region", "fc_measure"):
            out[key] = v
        elif key == "lesions":
            out[key] = [s for s in v.split(",") if s]
        else:
            try:
                num = float(v)
            except ValueError:
                raise ValueError(f"query argument {key}={v!r} is not a number") from None
            if not math.isfinite(num):
                raise ValueError(f"query argument {key}={v!r} is not a finite number")
            out[key] = int(num) if key == "seed" else num
    return out


#: explorer settings a link carries besides the changed model/network parameters
_LINK_KEYS = ("model", "output", "connectome", "normalisation", "weight_scale", "duration_s", "transient_s",
              "seed", "montage", "empirical_fc", "band", "map_band", "region", "fc_measure")


def share_query(state: ExplorerState) -> str:
    """URL query that reopens the explorer in ``state`` (see :func:`parse_query`).

    Carries the settings that differ from a fresh explorer's and every model/network parameter
    that differs from its default; lesions as a comma-separated list. Edge edits are not part of
    a link (the summary says so).
    """
    fresh = ExplorerState(mode="sync", auto_run=False, model=state.model, connectome=state.connectome)
    out = {"model": state.model, "connectome": state.connectome}
    for key in _LINK_KEYS:
        v = getattr(state, key)
        if key not in out and v != getattr(fresh, key):
            out[key] = v
    for obj, ref in ((state.model_params, fresh.model_params), (state.network_params, fresh.network_params)):
        for name, v in values_of(obj).items():
            if not np.isclose(v, getattr(ref, name)):
                out[name] = v
    if state.lesions:
        out["lesions"] = ",".join(state.lesions)
    return urlencode({k: (f"{v:g}" if isinstance(v, float) else v) for k, v in out.items()}, safe=",")


class Explorer(pn.viewable.Viewer):
    """The explorer's controls and plots over one :class:`ExplorerState` (one per session)."""

    def __init__(self, state: ExplorerState | None = None, mode: str = "dask", **params):
        super().__init__(**params)
        self.state = state or ExplorerState(mode=mode)
        s, r = self.state, self.state.runner
        self.error = error_alert()
        self.query_error = error_alert()
        r.param.watch(self._show_error, "error")

        # --- plots: one Bokeh figure per plot, updated in place; each gets a new result in its
        # own event-loop tick (StagedResult) so other sessions and pings are served in between.
        # A plot is built when its tab is first opened (_open_tab): a page load builds and
        # sends only the first tab's.
        res = r.param.result
        self.plots: dict = {}
        self.staged = sh = StagedResult(r, "result", list(panes.EXPLORER_PLOTS))
        self._draw = {"region_spectra": lambda p, v: p.update(v, s.region),
                      "sensor_spectra": lambda p, v: p.update(v),
                      "brain_map": lambda p, v: p.update(v, s.map_band),
                      "topomap": lambda p, v: p.update(v, s.band),
                      "fc_matrix": lambda p, v: p.update(v, s.fc_measure),
                      "eeg_traces": lambda p, v: p.update(v),
                      "weights": lambda p, v: p.update(v)}
        for key in self._draw:
            sh.param.watch(lambda e, key=key: self._show(key), key)
        s.param.watch(lambda e: self._show("region_spectra"), "region")
        s.param.watch(lambda e: self._show("brain_map"), "map_band")
        s.param.watch(lambda e: self._show("topomap"), "band")
        s.param.watch(lambda e: self._show("fc_matrix"), "fc_measure")
        self.tabs = pn.Tabs(*[(title, pn.FlexBox()) for title in PLOT_TABS], dynamic=True,
                            css_classes=["plot-tabs"], sizing_mode="stretch_width")
        self.tabs.param.watch(lambda e: self._open_tab(e.new), "active")
        self._open_tab(0)
        self.summary = pn.pane.Markdown(pn.bind(panes.summary_markdown, res, r.param.error, r.param.busy, s.param.fc_measure),
                                        css_classes=["run-summary"], sizing_mode="stretch_width")
        self.spinner = busy_indicator(r.param.busy, size=28)

        # --- controls
        self.edge_weight = NumberBox("edge weight", 1.0, 0.0, 10.0, unit="normalised")
        self.edge_target = pn.widgets.Select(label="edge target", options=s.labels(), width=150)
        labels = s.labels()
        self.edge_source = pn.widgets.Select(label="edge source", options=labels, width=150,
                                             value=labels[min(1, len(labels) - 1)])
        self.edge_button = pn.widgets.Button(label="Set edge", color="primary", width=100)
        self.edge_button.on_click(self._set_edge)
        self.clear_button = pn.widgets.Button(label="Clear edits", width=100)
        self.clear_button.on_click(self._clear_edits)
        self.edge_error = error_alert()
        self.seed_box = NumberBox("seed", s.seed, 0, 2**31 - 1, integer=True)
        self.seed_box.param.watch(lambda e: setattr(s, "seed", int(e.new)), "value")
        s.param.watch(lambda e: setattr(self.seed_box.input, "value", str(e.new)), "seed")
        self.run_button = pn.widgets.Button(label="Simulate now", color="success", width=130)
        self.run_button.on_click(lambda e: s.run())
        s.param.watch(self._on_connectome, "connectome")

        # --- take away: files of the current run (made off the event loop) and a link to it
        self.export_runner = JobRunner(mode=s.runner.mode)
        self.export_button = pn.widgets.Button(label="Prepare downloads", width=150, css_classes=["prepare-downloads"])
        self.export_button.on_click(lambda e: self.export_runner.submit(explorer_export_job, s.spec()))
        self.downloads = {name: pn.widgets.FileDownload(filename=name, label=f"Download {name}", disabled=True,
                                                        color="primary", css_classes=[f"download-{name.split('.')[0]}"],
                                                        sizing_mode="stretch_width")
                          for name in ("run.nc", "twin.nc", "report.html")}
        self.export_status = pn.pane.Markdown("Files of the current run: the simulation (netCDF), its twin "
                                              "(reproduces it bit for bit) and a lab-meeting report.",
                                              css_classes=["export-status"], sizing_mode="stretch_width")
        self.export_runner.param.watch(self._on_export, ["result", "error", "busy"])
        self.link = pn.widgets.TextInput(label="link to this view", value="", css_classes=["share-link"],
                                         sizing_mode="stretch_width")
        self.copy_button = pn.widgets.Button(label="Copy link", width=100)
        self.copy_button.js_on_click(args={"inp": self.link}, code=_COPY_JS)
        r.param.watch(lambda e: self._update_link(), "result")
        s.param.watch(lambda e: self._update_link(), ["fc_measure", "band", "map_band", "region"])

    # --- callbacks -------------------------------------------------------------------------------
    def _show(self, key: str) -> None:
        """Draw the latest result in plot ``key`` if that plot has been built."""
        plot = self.plots.get(key)
        if plot is not None:
            self._draw[key](plot, getattr(self.staged, key))

    def _open_tab(self, index: int) -> None:
        """Build the plots of tab ``index`` the first time it is opened, showing the latest result."""
        box = self.tabs[index]
        if box.objects:
            return
        keys = list(PLOT_TABS.values())[index]
        self.plots.update(panes.explorer_plots(keys))
        for key in keys:
            self._show(key)
        box.objects = [pn.pane.Bokeh(self.plots[k].figure, css_classes=[f"plot-{k.replace('_', '-')}"])
                       for k in keys]

    def _on_export(self, *events):
        er = self.export_runner
        if er.busy:
            self.export_status.object = "Preparing the files (simulating the current settings again)…"
            for d in self.downloads.values():
                d.disabled = True
        elif er.error:
            self.export_status.object = f"Export failed: {er.error}"
        elif er.result is not None:
            for name, d in self.downloads.items():
                d.file = io.BytesIO(er.result[name])
                d.filename = name
                d.disabled = False
            sizes = ", ".join(f"`{k}` {len(v) / 1e6:.1f} MB" for k, v in er.result.items())
            self.export_status.object = f"Ready ({sizes}; settings of the moment you clicked)."

    def _update_link(self):
        loc = pn.state.location
        base = loc.href.split("?")[0] if loc is not None and loc.href else ""
        query = share_query(self.state)
        note = " (edited edges are not in links)" if self.state.edges else ""
        self.link.value = f"{base}?{query}"
        self.link.description = f"Opens the explorer with these settings{note}"

    def _show_error(self, event):
        self.error.object = f"Simulation failed: {event.new}" if event.new else ""
        self.error.visible = bool(event.new)

    def _on_connectome(self, event):
        labels = self.state.labels()
        self.edge_target.options = labels
        self.edge_source.options = labels
        self.edge_source.value = labels[min(1, len(labels) - 1)]

    def _set_edge(self, event=None):
        msg = self.edge_weight.error
        if not msg:
            try:
                self.state.add_edge(self.edge_target.value, self.edge_source.value, self.edge_weight.value)
            except ValueError as exc:
                msg = str(exc)
        self.edge_error.object = msg
        self.edge_error.visible = bool(msg)

    def _clear_edits(self, event=None):
        self.state.update_params({"edges": [], "lesions": []})

    def apply_query(self, args: dict) -> None:
        """Set the state from URL query arguments; bad ones are reported inline, not raised."""
        try:
            values = parse_query(args)
            # connectome and model first: they reset the dependent settings
            for key in ("model", "connectome"):
                if key in values:
                    setattr(self.state, key, values.pop(key))
            if values:
                self.state.update_params(values)
        except (ValueError, TypeError, OverflowError) as exc:
            self.query_error.object = f"URL settings ignored: {exc}"
            self.query_error.visible = True

    # --- layout ----------------------------------------------------------------------------------
    @staticmethod
    def _model_sliders(model_params):
        return pn.Column(*paramset_widgets(model_params), sizing_mode="stretch_width")

    def controls(self) -> pn.Column:
        s = self.state
        net = paramset_widgets(s.network_params)
        model_card = pn.Card(
            pn.widgets.Select.from_param(s.param.model, sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(s.param.output, sizing_mode="stretch_width"),
            pn.bind(self._model_sliders, s.param.model_params), title="Model", collapsed=False, sizing_mode="stretch_width")
        network_card = pn.Card(
            pn.widgets.Select.from_param(s.param.connectome, sizing_mode="stretch_width"),
            *net,
            pn.widgets.Select.from_param(s.param.normalisation, sizing_mode="stretch_width"),
            pn.widgets.FloatSlider.from_param(s.param.weight_scale, throttled=True, sizing_mode="stretch_width"),
            pn.widgets.MultiChoice.from_param(s.param.lesions, sizing_mode="stretch_width"),
            pn.Row(self.edge_target, self.edge_source),
            pn.Row(self.edge_weight, self.edge_button),
            self.edge_error,
            pn.Row(self.clear_button, pn.pane.Markdown(pn.bind(_edits_text, s.param.edges, s.param.lesions))),
            title="Network and connectome", sizing_mode="stretch_width")
        run_card = pn.Card(
            pn.widgets.FloatSlider.from_param(s.param.duration_s, throttled=True, sizing_mode="stretch_width"),
            pn.widgets.FloatSlider.from_param(s.param.transient_s, throttled=True, sizing_mode="stretch_width"),
            self.seed_box,
            pn.widgets.Select.from_param(s.param.montage, sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(s.param.head, name="EEG head model", sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(s.param.empirical_fc, sizing_mode="stretch_width"),
            pn.Row(pn.widgets.Checkbox.from_param(s.param.auto_run, label="re-simulate on change"),
                   self.run_button),
            title="Run", sizing_mode="stretch_width")
        takeaway_card = pn.Card(
            self.export_button, self.export_status, *self.downloads.values(),
            pn.Row(self.link, self.copy_button, sizing_mode="stretch_width"),
            title="Take away", collapsed=False, sizing_mode="stretch_width")
        view_card = pn.Card(
            pn.widgets.Select.from_param(s.param.region, sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(s.param.map_band, sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(s.param.band, label="topomap band", sizing_mode="stretch_width"),
            pn.widgets.Select.from_param(s.param.fc_measure, sizing_mode="stretch_width",
                                         css_classes=["fc-measure"]),
            title="View (no re-simulation)", sizing_mode="stretch_width")
        return pn.Column(model_card, network_card, run_card, view_card, takeaway_card, sizing_mode="stretch_width")

    def main(self) -> pn.Column:
        header = pn.Row(self.spinner, self.summary, sizing_mode="stretch_width")
        # Only the open tab is in the browser's document (dynamic tabs): a hidden plot costs the
        # page load nothing and a new result neither travels to it nor is drawn; it is built and
        # sent with the latest data when its tab is opened. With all seven plots on one page each
        # result was drawn seven times in each browser, most of them below the fold (README "Serving").
        return pn.Column(header, self.error, self.query_error, self.tabs, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.controls(), width=380), self.main(), sizing_mode="stretch_width")


_COPY_JS = """
if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(inp.value); }
else { const t = document.createElement('textarea'); t.value = inp.value; document.body.appendChild(t);
       t.select(); document.execCommand('copy'); document.body.removeChild(t); }
"""


def _edits_text(edges, lesions) -> str:
    parts = [f"lesioned: {', '.join(lesions)}"] if lesions else []
    parts += [f"{t}↔{s} = {w:g}" for t, s, w in edges]
    return "; ".join(parts) if parts else "no edits"


def servable(mode: str = "dask"):
    """Build one session's explorer page and mark it servable (``panel serve apps/explorer.py``)."""
    pn.extension(throttled=True, notifications=False)
    pause_gc_while_building()         # resumed once the page has loaded (serve_page)
    explorer = Explorer(mode=mode)

    def start():
        explorer.apply_query(pn.state.session_args)
        if explorer.state.runner.latest_token == 0:
            explorer.state.run()

    # a closed page cancels its pending simulation (no work for a session nobody sees)
    pn.state.on_session_destroyed(lambda session_context: explorer.state.runner.cancel())
    return serve_page("neurotwin explorer", explorer, on_load=start)

