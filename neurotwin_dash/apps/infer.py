"""Inference dashboard: ``panel serve apps/infer.py`` (or ``neurotwin serve``)."""
from neurotwin_dash.ui.infer import servable

servable()
