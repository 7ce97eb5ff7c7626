"""The landing page served at ``/``: what the server offers, in one screen, with no internet.

One card per served app — its title, the first line of its module's docstring, a thumbnail
(a small PNG shipped in ``ui/thumbnails/``, embedded in the page) and a link that stays relative
so it works under a URL prefix (``--prefix``, jupyter-server-proxy). The footer gives the
package version and the state of the server's Dask client. Nothing on the page is fetched from
outside the server.
"""
from __future__ import annotations

import html
import importlib
import os
import re
from pathlib import Path

import panel as pn

from .. import __version__
from .serve import APPS, INDEX_APP, SERVED_APPS_ENV
from .state import dask_status, serve_page

__all__ = ["APP_TITLES", "THUMBNAILS", "served_apps", "app_summary", "Landing",
           "servable"]

#: Folder of the app thumbnails (``<app>.png``, ~320 px wide; see ``scripts/make_thumbnails.py``).
THUMBNAILS = Path(__file__).with_name("thumbnails")

#: Titles of the apps on their cards (app name -> title); other apps show their name.
APP_TITLES = {"explorer": "Explorer", "montage": "Montage designer", "fit": "Fit and sweep monitor",
              "infer": "Bayesian inference"}

def served_apps() -> list[str]:
    """The apps this server serves, in the order of :data:`neurotwin_dash.ui.serve.APPS`."""
    names = [a for a in os.environ.get(SERVED_APPS_ENV, "").split(",") if a]
    return [a for a in APPS if a in names] if names else [a for a in APPS if a != INDEX_APP]


def app_summary(name: str) -> str:
    """First sentence of the app module's docstring (the module named in ``serve.APPS``)."""
    mod = importlib.import_module(f"{__package__}.{APPS[name]}")
    doc = (mod.__doc__ or "").strip().splitlines()
    # the first line as plain text: reST markup (``/infer``) shown literally reads as noise on a card
    return re.sub(r"\s*\(``[^`]*``\)|``", "", doc[0]).strip() if doc else ""


def _card(name: str, base: str) -> pn.Column:
    title = APP_TITLES.get(name, name)
    href = f"{base}/{name}"
    thumb = THUMBNAILS / f"{name}.png"
    picture = (pn.pane.PNG(str(thumb), width=300, link_url=href, embed=True) if thumb.exists()
               else pn.pane.HTML(f"<div class='no-thumb'>{html.escape(title)}</div>", width=300, height=160))
    text = pn.pane.HTML(
        f"<h3><a class='app-link' href='{html.escape(href)}'>{html.escape(title)}</a></h3>"
        f"<p>{html.escape(app_summary(name))}</p>", width=300, styles={"font-size": "14px"})
    return pn.Column(picture, text, css_classes=["app-card", f"app-card-{name}"], width=320,
                     styles={"border": "1px solid #c8d2dc", "border-radius": "6px", "padding": "8px",
                             "background": "white"})


class Landing(pn.viewable.Viewer):
    """Cards of the served apps, the version and the Dask status."""

    def __init__(self, apps=None, base: str = ".", **params):
        super().__init__(**params)
        self.apps = list(apps) if apps is not None else served_apps()
        self.base = base
        self.status = pn.pane.Markdown(dask_status(), css_classes=["dask-status"])

    def controls(self) -> pn.Column:
        return pn.Column(
            pn.pane.Markdown(
                "**neurotwin-dash** — personalised brain network models for transcranial "
                "electrical stimulation (tDCS, tACS): neural mass networks on real connectomes, "
                "EEG and BOLD observers, tES fields, fits and sweeps on Dask.\n\n"
                f"Version **{__version__}**."),
            self.status, sizing_mode="stretch_width")

    def main(self) -> pn.Column:
        cards = pn.FlexBox(*[_card(a, self.base) for a in self.apps], gap="16px")
        return pn.Column(pn.pane.Markdown("## Apps on this server"), cards, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(self.controls(), self.main())


def servable():
    """Build one session's landing page (``neurotwin serve`` serves it at ``/`` and ``/home``)."""
    pn.extension(notifications=False)
    # relative links: "./explorer" from "/" or "/prefix/", "../explorer" from ".../home/"
    base = pn.state.rel_path or "."
    landing = Landing(base=base)
    return serve_page("neurotwin-dash", landing, sidebar_width=340)
