"""Small input components shared by the dashboards."""
from __future__ import annotations

import math

import panel as pn
import param

__all__ = ["NumberBox", "paramset_widgets", "error_alert", "busy_indicator"]


def error_alert(text: str = "", **kw) -> pn.pane.Alert:
    """A red inline message (hidden while ``text`` is empty); tests find it by ``.inline-error``."""
    return pn.pane.Alert(text, alert_type="danger", visible=bool(text), css_classes=["inline-error"],
                         margin=(2, 10), **kw)


_BUSY_CSS = """
.nt-busy, .nt-idle { box-sizing: border-box; width: 100%; height: 100%; border-radius: 50%;
                     border: 3px solid #e3e7eb; }
.nt-busy { border-top-color: #1f4e79; animation: nt-spin 0.9s linear infinite; }
@keyframes nt-spin { to { transform: rotate(360deg); } }
"""


def _busy_html(busy: bool) -> str:
    return '<div class="nt-busy" title="simulating…"></div>' if busy else '<div class="nt-idle"></div>'


def busy_indicator(busy, size: int = 28, css_classes=("busy-indicator",)) -> pn.pane.HTML:
    """A spinning ring while ``busy`` (a boolean parameter, e.g. ``runner.param.busy``) is true.

    A fixed-size HTML pane animated by CSS alone. Panel's ``LoadingSpinner`` toggles its CSS
    classes instead, and each toggle made the browser lay out the page and every plot on it
    again: ~0.08 CPU-s per result in each browser (two toggles per run; README "Serving").
    """
    return pn.pane.HTML(pn.bind(_busy_html, busy), width=size, height=size, margin=(8, 10),
                        stylesheets=[_BUSY_CSS], css_classes=list(css_classes))


class NumberBox(pn.viewable.Viewer):
    """A text box for one number with its allowed range; bad input shows an inline error.

    ``value`` only changes when the text is a number within ``[low, high]``; otherwise
    ``error`` says what is wrong (naming the field and the allowed range) and the previous
    value stays. ``integer=True`` accepts whole numbers only.
    """

    value = param.Number(default=0.0, allow_None=True)
    error = param.String(default="")

    def __init__(self, label: str, value: float, low: float = -math.inf, high: float = math.inf,
                 unit: str = "", integer: bool = False, width: int = 120, **params):
        super().__init__(value=value, **params)
        self.label, self.low, self.high, self.unit, self.integer = label, low, high, unit, integer
        shown = f"{label} ({unit})" if unit else label
        self.input = pn.widgets.TextInput(label=shown, value=self._fmt(value), width=width,
                                          css_classes=["number-box"])
        self.alert = error_alert()
        self.input.param.watch(self._parse, "value")

    def _fmt(self, v) -> str:
        if v is None:
            return ""
        return str(int(v)) if self.integer else f"{v:g}"

    def _range(self) -> str:
        lo = "-∞" if self.low == -math.inf else f"{self.low:g}"
        hi = "∞" if self.high == math.inf else f"{self.high:g}"
        return f"[{lo}, {hi}]{' ' + self.unit if self.unit else ''}"

    def check(self, text: str) -> float:
        """Parse ``text``; raises ``ValueError`` naming the field and the allowed range."""
        s = str(text).strip()
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"{self.label}: {s!r} is not a number; allowed {self._range()}") from None
        if not math.isfinite(v):
            raise ValueError(f"{self.label}: {s!r} must be finite; allowed {self._range()}")
        if self.integer and v != int(v):
            raise ValueError(f"{self.label}: {s!r} must be a whole number in {self._range()}")
        if v < self.low or v > self.high:
            raise ValueError(f"{self.label} = {v:g} is outside the allowed range {self._range()}")
        return float(int(v)) if self.integer else v

    def _parse(self, event):
        try:
            v = self.check(event.new)
        except ValueError as exc:
            self.error = str(exc)
        else:
            self.error = ""
            self.value = v
        self.alert.object = self.error
        self.alert.visible = bool(self.error)

    def set_text(self, text: str) -> None:
        """Type ``text`` into the box (as a user would)."""
        self.input.value = text

    def __panel__(self):
        return pn.Column(self.input, self.alert, margin=0)


def paramset_widgets(obj: param.Parameterized, names=None, throttled: bool = True) -> list:
    """Sliders for the numeric parameters of ``obj`` (range, label with unit, doc as tooltip).

    With ``throttled`` the parameter only changes when the slider is released. Each slider has
    the CSS class ``param-<name>`` (browser tests find it by that).
    """
    out = []
    for n in names or [p for p in obj.param if p != "name"]:
        p = obj.param[n]
        out.append(pn.widgets.FloatSlider.from_param(p, throttled=throttled, css_classes=[f"param-{n}"],
                                                     sizing_mode="stretch_width", format="0[.][000]"))
    return out
