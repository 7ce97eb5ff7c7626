"""Landing page: ``panel serve apps/home.py`` (``neurotwin serve`` serves it at ``/``)."""
from neurotwin_dash.ui.landing import servable

servable()
