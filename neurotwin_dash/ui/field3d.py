"""3D view of a field on the cortex, behind one small function with a static fallback.

:func:`render_surface_png` draws per-vertex values on a triangulated surface and returns PNG
bytes. It uses pyvista (VTK, off-screen) when that renders here, and matplotlib's
``plot_trisurf`` otherwise, so the montage designer always has a picture; the backend used
is returned with the image. Rendering happens in the compute job (a Dask worker), never in the
server process.
"""
from __future__ import annotations

import io
import os

import numpy as np

__all__ = ["render_surface_png", "BACKENDS"]

BACKENDS = ("pyvista", "matplotlib")


def _symmetric_limit(values) -> float:
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    return float(np.percentile(v, 99)) if v.size else 1.0


def _pyvista_png(vertices, triangles, values, title, size, clim) -> bytes:
    os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")
    import pyvista as pv  # heavy: pyvista/VTK, only for the 3-D render
    faces = np.column_stack([np.full(len(triangles), 3), triangles]).ravel()
    mesh = pv.PolyData(np.asarray(vertices, dtype=float), faces)
    mesh["value"] = np.asarray(values, dtype=float)
    plotter = pv.Plotter(off_screen=True, window_size=size)
    plotter.set_background("white")
    plotter.add_mesh(mesh, scalars="value", cmap="RdBu_r", clim=clim, smooth_shading=True,
                     scalar_bar_args={"title": title, "color": "black", "vertical": False, "n_labels": 3,
                                      "fmt": "%.2f", "width": 0.7, "position_x": 0.15,
                                      "title_font_size": 14, "label_font_size": 13})
    plotter.view_xy()                     # from above: nose up, right to the right
    img = plotter.screenshot(return_img=True)
    plotter.close()
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _matplotlib_png(vertices, triangles, values, title, size, clim) -> bytes:
    import matplotlib  # heavy: matplotlib (~0.3 s), the fallback renderer only
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    v = np.asarray(vertices, dtype=float)
    tri = np.asarray(triangles)
    vals = np.asarray(values, dtype=float)[tri].mean(axis=1)
    # painter's order from above: draw the lowest triangles first
    order = np.argsort(v[tri][:, :, 2].mean(axis=1))
    fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    norm = Normalize(*clim)
    coll = ax.tripcolor(v[:, 0], v[:, 1], tri[order], facecolors=vals[order], cmap="RdBu_r", norm=norm,
                        shading="flat")
    ax.set_aspect("equal")
    ax.axis("off")
    fig.colorbar(coll, ax=ax, orientation="horizontal", fraction=0.05, label=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def render_surface_png(vertices, triangles, values, title: str = "E_n (V/m)", size=(460, 420),
                       backend: str = "auto") -> tuple[bytes, str]:
    """PNG of ``values`` (per vertex) on a surface seen from above, symmetric diverging colours.

    Parameters
    ----------
    vertices : array (n_vertex, 3), RAS mm
    triangles : int array (n_triangle, 3)
    values : array (n_vertex,)
    backend : ``"auto"`` (pyvista, else matplotlib), ``"pyvista"`` or ``"matplotlib"``

    Returns
    -------
    png : bytes
    backend : str
        The backend that drew it.
    """
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend {backend!r} unknown; allowed: auto, {', '.join(BACKENDS)}")
    lim = _symmetric_limit(values)
    clim = (-lim, lim)
    if backend in ("auto", "pyvista"):
        try:
            return _pyvista_png(vertices, triangles, values, title, size, clim), "pyvista"
        except Exception:  # no OpenGL / VTK here: draw the static fallback
            if backend == "pyvista":
                raise
    return _matplotlib_png(vertices, triangles, values, title, size, clim), "matplotlib"
