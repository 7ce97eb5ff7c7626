"""Fit and sweep monitor: ``panel serve apps/fit.py`` (or ``neurotwin serve``)."""
from neurotwin_dash.ui.fitmonitor import servable

servable()
