"""Explorer: ``panel serve apps/explorer.py`` (or ``neurotwin serve``)."""
from neurotwin_dash.ui.explorer import servable

servable()
