"""Montage designer: ``panel serve apps/montage.py`` (or ``neurotwin serve``)."""
from neurotwin_dash.ui.montage import servable

servable()
