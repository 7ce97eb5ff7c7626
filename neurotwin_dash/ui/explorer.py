"""Explorer dashboard: pick a connectome from the catalog and look at it."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from .. import catalog

__all__ = ["ConnectomeView", "servable"]


class ConnectomeView(pn.viewable.Viewer):
    """Connectome picker and its weight matrix as a heatmap."""

    connectome = param.Selector(objects=[], doc="Connectome from the data catalog")

    def __init__(self, **params):
        names = catalog.names("connectome")
        self.param.connectome.objects = names
        params.setdefault("connectome", catalog.default_connectome())
        super().__init__(**params)

    @param.depends("connectome")
    def weights_plot(self):
        c = catalog.load(self.connectome).normalise("max")
        w = c.weights
        logw = np.where(w > 0, np.log10(np.where(w > 0, w, 1.0)), np.nan)
        n = c.n_regions
        img = hv.Image(logw[::-1], bounds=(-0.5, -0.5, n - 0.5, n - 0.5),
                       kdims=["source", "target"], vdims=["log10 weight"])
        return img.opts(cmap="viridis", colorbar=True, width=520, height=480,
                        title=f"{c.name}: {n} regions (weights, max-normalised, log10)",
                        tools=["hover"])

    def __panel__(self):
        return pn.Row(pn.Param(self.param, widgets={"connectome": pn.widgets.Select}),
                      self.weights_plot)


def servable():
    hv.extension("bokeh")
    view = ConnectomeView()
    return pn.template.BootstrapTemplate(
        title="neurotwin explorer", sidebar=[view.param.connectome], main=[view.weights_plot],
    ).servable()
