"""tES electric fields at connectome regions by reciprocity on the EEG forward model.

Physics (docs/science.md §7). The head is a linear, quasi-static volume conductor, so by Helmholtz
reciprocity (Rush & Driscoll 1969) the field that a current ``I`` injected at electrode *k*
(and removed elsewhere) produces at a point equals the EEG lead field of that electrode. With
the reference-free EEG gain ``G_k(r)`` (V per A·m: potential at electrode *k* from a unit dipole
at *r*) and currents summing to zero,

    E(r) = − Σ_k I_k · G_k(r)          (V/m for I in A)

Sign check (point source in an infinite medium): ``G_k(r) = (r_k − r) / (4πσ|r_k − r|³)`` while
the current spreading from an anode at ``r_k`` gives ``E(r) = I (r − r_k) / (4πσ|r − r_k|³)``, so
``E = −I·G_k``: the field points away from anodes and toward cathodes (current flows anode →
cathode). Because ``Σ_k I_k = 0`` any reference common to all electrodes cancels; the
per-electrode matrix stored here is re-referenced to the layout's average so that each row is
finite and the sum over a montage is exact.

The gain is the one the EEG observer uses (:func:`neurotwin_dash.observe.forward.forward_model`,
same head geometry, electrodes projected onto the scalp; docs/science.md §10): by default MNE's
four-layer sphere fitted to the electrode layout, radii ≈ 89/91/96/99 mm (brain/CSF/skull/scalp)
for ``standard_1020``, with the **tES conductivities 0.33 / 1.65 / 0.01 / 0.43 S/m** of
docs/science.md §7 (``conductivity="eeg"`` gives the EEG observer's 0.33/1.0/0.004/0.33), the region
centres placed inside the brain sphere as the forward model documents. ``head="template_bem"``
uses the realistic template BEM instead. With the sphere, bipolar scalp montages give
**≈ 0.2–0.4 V/m per mA** at the strongest regions (1 mA T7–T8: max 0.22, median 0.117 V/m; F3–F4:
max 0.25; O1–Fz: max 0.35 on the 10-05 cap; see ``bench/bench_stimulation.py`` and the README's
sphere vs template-BEM table).

Normal component (convention of Ruffini's group, docs/science.md §7): ``E_n = E · n`` with ``n`` the
unit normal pointing from the pial surface **into** the cortex (toward white matter, along the
pyramidal cell's apical-dendrite-to-soma axis). **Positive E_n depolarises the soma.** Region
orientations in tvb-data (and the radial fallback of the forward model) point *outward*, like
the dipole moment of EEG sources, so ``n = −orientation``.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np
import xarray as xr

from .. import catalog
from ..connectome import Connectome
from ..observe import forward
from ..observe.forward import forward_model
from .montage import DEFAULT_LAYOUT, Montage, MontageError, canonical_name

__all__ = ["FieldError", "electrode_fields", "montage_field", "normal_field", "field_layout",
           "field_summary", "bipolar_over", "scalp_electrodes", "cortex_surface", "surface_fields",
           "montage_surface_field"]

#: layout whose forward model (same sphere as the EEG default) is used when a montage fits in it
EEG_LAYOUT = "standard_1020"
#: positions of the 10-10 layout that are not scalp electrodes of a stimulation cap: the inferior
#: row (…9/…10), inion, ear/mastoid references and the old names T3–T6 (duplicates of T7/T8/P7/P8)
_NOT_CAP = {"IZ", "M1", "M2", "A1", "A2", "T3", "T4", "T5", "T6"}


def scalp_electrodes(names: Iterable[str]) -> list[str]:
    """The cap electrodes among ``names``: drops the inferior 9/10 row, Iz, mastoids/ears, T3–T6."""
    out = []
    for n in names:
        s = str(n)
        if s.upper() in _NOT_CAP or s.endswith("9") or s.endswith("10"):
            continue
        out.append(s)
    return out


class FieldError(ValueError):
    """Invalid E-field input; the message names the field and what is allowed."""


def _connectome_key(connectome):
    if isinstance(connectome, Connectome):
        return connectome.content_hash()
    return str(connectome)


_FIELD_CACHE: dict = {}


def _is_file_head(head) -> bool:
    """A head given as a file may change on disk: its fields are not memoised in the process."""
    return not (isinstance(head, str) and head in ("sphere", "template_bem"))


def electrode_fields(connectome="tvb76", layout: str = EEG_LAYOUT, head="sphere", orientation="auto",
                     cache: bool = True, conductivity="tes", **forward_options) -> xr.Dataset:
    """Per-electrode field matrices: the field of 1 mA injected at each electrode.

    Parameters
    ----------
    connectome : Connectome | str
        Regions (centres, orientations); catalog name allowed.
    layout : str
        Electrode layout whose positions define the candidate electrodes (catalog/MNE montage);
        the default is the EEG observer's ``standard_1020`` so both use one forward model.
    head, orientation : see :func:`neurotwin_dash.observe.forward.forward_model`
        (``head``: ``"sphere"``, ``"template_bem"`` or a ``*-bem-sol.fif`` path).
    conductivity : ``"tes"`` (default) | ``"eeg"`` | values
        Conductivity set (docs/science.md §7, §10): the tES set (CSF 1.65, skull 0.01, scalp
        0.43 S/m) by default; ``"eeg"`` gives the EEG observer's head exactly.
    cache : bool
        Use the forward model's disk cache (and an in-process cache of the result).
    **forward_options
        Passed on to the forward model (e.g. ``placement="mni"``).

    Returns
    -------
    xarray.Dataset
        ``field`` (electrode, region, axis): V/m per mA, head-frame x/y/z, average-referenced
        (valid in sums whose currents add to zero); ``field_normal`` (electrode, region): its
        component along ``normal``; ``normal`` (region, axis): inward unit normals (E_n > 0
        depolarises); ``position`` (region, axis) and ``electrode_position`` (electrode, axis),
        head-frame metres; attrs with the head model (radii, conductivities) and sign convention.
    """
    key = (_connectome_key(connectome), str(layout), str(head), str(orientation), str(conductivity),
           tuple(sorted((k, str(v)) for k, v in forward_options.items())))
    if cache and key in _FIELD_CACHE and not _is_file_head(head):
        return _FIELD_CACHE[key]
    fwd = forward_model(connectome, layout, head=head, orientation=orientation, cache=cache,
                        conductivity=conductivity, **forward_options)
    G = fwd["gain_vector"].values                                   # (sensor, region, 3) V/(A·m)
    G = G - G.mean(axis=0, keepdims=True)                           # common reference cancels
    field = -G * 1e-3                                                # V/m per mA
    normal = -fwd["orientation"].values                              # outward -> inward
    field_n = np.einsum("erk,rk->er", field, normal)
    electrodes = [str(s) for s in fwd["sensor"].values]
    attrs = {k: v for k, v in fwd.attrs.items() if k not in ("reference", "cache_key")}
    attrs.update({
        "units": "V/m per mA", "layout": str(layout),
        "method": "reciprocity on the EEG gain: E = -sum_k I_k G_k (average-referenced gain)",
        "normal_convention": "n points from the pial surface into cortex (inward); E_n > 0 depolarises the soma",
        "frame": "MNE head (RAS, metres)",
    })
    ds = xr.Dataset(
        {
            "field": (("electrode", "region", "axis"), field,
                      {"units": "V/m per mA", "long_name": "E per mA injected at the electrode"}),
            "field_normal": (("electrode", "region"), field_n,
                             {"units": "V/m per mA", "long_name": "inward normal component of field"}),
            "normal": (("region", "axis"), normal, {"units": "1", "long_name": "inward cortical normal"}),
            "position": (("region", "axis"), fwd["position"].values, {"units": "m"}),
            "moved_mm": (("region",), fwd["moved_mm"].values, {"units": "mm"}),
            "electrode_position": (("electrode", "axis"), fwd["sensor_position"].values,
                                   {"units": "m", "long_name": "electrode on the scalp"}),
            "electrode_moved_mm": (("electrode",), fwd["electrode_moved_mm"].values,
                                   {"units": "mm", "long_name": "distance moved onto the scalp"}),
        },
        coords={"electrode": electrodes, "region": fwd["region"].values, "axis": ["x", "y", "z"],
                "hemisphere": ("region", fwd["hemisphere"].values)},
        attrs=attrs,
    )
    if cache and not _is_file_head(head):
        _FIELD_CACHE[key] = ds
    return ds


def field_layout(electrodes: Iterable[str]) -> str:
    """Layout to compute fields in: the EEG layout when it holds every electrode, else 10-05."""
    try:
        for name in electrodes:
            canonical_name(name, EEG_LAYOUT)
    except MontageError:
        return DEFAULT_LAYOUT
    return EEG_LAYOUT


def _fields_for(montage: Montage, fields, connectome, head, orientation) -> xr.Dataset:
    if fields is None:
        fields = electrode_fields(connectome, field_layout(montage.active_electrodes or montage.electrodes),
                                  head=head, orientation=orientation)
    lookup = {str(e).upper(): str(e) for e in fields["electrode"].values}
    missing = [n for n in montage.active_electrodes if n.upper() not in lookup]
    if missing:
        raise FieldError(f"electrodes {missing} are not in the field matrix's layout "
                         f"{fields.attrs.get('layout')!r}; compute electrode_fields with a layout holding them")
    return fields


def montage_field(montage: Montage, fields: xr.Dataset | None = None, connectome="tvb76",
                  head="sphere", orientation="auto") -> xr.Dataset:
    """Field of a montage at every region: the current-weighted sum of per-electrode fields.

    Parameters
    ----------
    montage : Montage
        Currents in mA (they sum to zero).
    fields : xarray.Dataset, optional
        From :func:`electrode_fields`; computed for ``connectome`` when omitted.

    Returns
    -------
    xarray.Dataset
        ``E`` (region, axis) V/m, ``E_n`` (region) V/m (inward normal; positive depolarises),
        ``E_mag`` (region) V/m, plus the currents used (``current_mA`` over ``electrode``).
    """
    if not isinstance(montage, Montage):
        raise FieldError(f"montage must be a Montage, got {type(montage).__name__}")
    fields = _fields_for(montage, fields, connectome, head, orientation)
    lookup = {str(e).upper(): i for i, e in enumerate(fields["electrode"].values)}
    names = montage.active_electrodes
    idx = [lookup[n.upper()] for n in names]
    cur = np.array([montage.currents_mA[n] for n in names])
    F = fields["field"].values
    E = np.tensordot(cur, F[idx], axes=(0, 0)) if idx else np.zeros(F.shape[1:])
    En = np.einsum("rk,rk->r", E, fields["normal"].values)
    return xr.Dataset(
        {
            "E": (("region", "axis"), E, {"units": "V/m", "long_name": "electric field (head frame)"}),
            "E_n": (("region",), En, {"units": "V/m",
                                      "long_name": "normal field (inward; > 0 depolarises the soma)"}),
            "E_mag": (("region",), np.linalg.norm(E, axis=1), {"units": "V/m", "long_name": "|E|"}),
            "current_mA": (("electrode",), cur, {"units": "mA"}),
        },
        coords={"region": fields["region"].values, "axis": ["x", "y", "z"], "electrode": names,
                "hemisphere": ("region", fields["hemisphere"].values)},
        attrs={**fields.attrs, "montage": repr(montage)},
    )


def normal_field(montage: Montage, fields: xr.Dataset | None = None, connectome="tvb76", **kw) -> xr.DataArray:
    """``E_n`` (region) in V/m of a montage — the input the neural-mass coupling needs."""
    return montage_field(montage, fields, connectome, **kw)["E_n"]


def field_summary(field: xr.Dataset, target: Iterable[str]) -> dict:
    """Target and off-target figures of a montage field.

    Returns
    -------
    dict
        ``target_En`` (mean E_n over the target regions, V/m), ``target_Emag``, ``offtarget_Emag``
        (mean |E| over the other regions), ``focality`` (target mean |E| / off-target mean |E|),
        ``max_Emag`` and ``argmax_region``.
    """
    labels = [str(r) for r in field["region"].values]
    tset = set(target)
    unknown = sorted(tset - set(labels))
    if unknown:
        raise FieldError(f"target regions {unknown} not among the field's regions")
    mask = np.array([r in tset for r in labels])
    mag = field["E_mag"].values
    out = {
        "target_En": float(field["E_n"].values[mask].mean()),
        "target_Emag": float(mag[mask].mean()),
        "offtarget_Emag": float(mag[~mask].mean()) if (~mask).any() else 0.0,
        "max_Emag": float(mag.max()),
        "argmax_region": labels[int(mag.argmax())],
    }
    out["focality"] = out["target_Emag"] / max(out["offtarget_Emag"], 1e-12)
    return out


def bipolar_over(target: Iterable[str], fields: xr.Dataset, current_mA: float = 2.0,
                 candidates: Iterable[str] | None = None) -> Montage:
    """The conventional bipolar montage for a target: anode over it, cathode at the far side.

    The anode is the candidate electrode nearest the target centroid's scalp projection (seen
    from the sphere centre); the cathode the candidate farthest from the anode (the classic
    "anode over target, return over the opposite site" layout). Candidates default to the cap
    electrodes of the layout (:func:`scalp_electrodes`). The anode makes E_n positive
    (depolarising) under it.
    """
    labels = [str(r) for r in fields["region"].values]
    tset = list(target)
    missing = [t for t in tset if t not in labels]
    if missing:
        raise FieldError(f"target regions {missing} not among the field's regions")
    pos = fields["position"].sel(region=tset).values.mean(axis=0)
    r0 = np.asarray(fields.attrs.get("sphere_r0_m", [0.0, 0.0, 0.0]), float)
    names = (scalp_electrodes(fields["electrode"].values) if candidates is None
             else [str(c) for c in candidates])
    epos = fields["electrode_position"].sel(electrode=names).values
    d = (pos - r0) / np.linalg.norm(pos - r0)
    u = (epos - r0) / np.linalg.norm(epos - r0, axis=1, keepdims=True)
    anode = names[int(np.argmax(u @ d))]
    a_pos = epos[names.index(anode)]
    cathode = names[int(np.argmax(np.linalg.norm(epos - a_pos, axis=1)))]
    return Montage.bipolar(anode, cathode, current_mA, layout=fields.attrs.get("layout", DEFAULT_LAYOUT))


# --- cortical surface ---------------------------------------------------------------------

#: surface vertices are kept at least this far inside the inner-skull sphere
SURFACE_MARGIN_MM = 2.0


def cortex_surface(connectome="tvb76") -> xr.Dataset:
    """tvb-data's cortex of a connectome (:func:`neurotwin_dash.catalog.cortex_surface`); raises
    :class:`FieldError` when the connectome has none."""
    name = connectome if isinstance(connectome, str) else connectome.name
    try:
        return catalog.cortex_surface(name)
    except catalog.CatalogError as exc:
        raise FieldError(str(exc)) from None


def surface_fields(connectome="tvb76", layout: str = EEG_LAYOUT, cache: bool = True,
                   conductivity="tes") -> xr.Dataset:
    """Per-electrode fields at every cortex vertex (V/m per mA), on the regions' sphere head.

    Available for the sphere head (the template BEM's regions sit on the template cortex, not on
    tvb-data's surface).

    Vertices are placed into the head exactly like the region centres (the forward model's
    ``placement``; checked by reproducing the centres' positions); vertices beyond the brain
    sphere (less :data:`SURFACE_MARGIN_MM`) are pulled radially inside (``n_moved``).

    Returns
    -------
    xarray.Dataset
        ``field`` (electrode, vertex, axis) float32, ``normal`` (vertex, axis) inward,
        ``position`` (vertex, axis) head-frame m, ``vertex_region``, ``triangles``.
    """
    key = ("surface", _connectome_key(connectome), str(layout), str(conductivity))
    if cache and key in _FIELD_CACHE:
        return _FIELD_CACHE[key]
    surf = cortex_surface(connectome)
    con = catalog.load(surf.attrs["connectome"])
    fwd = forward.forward_model(con, layout, cache=cache, conductivity=conductivity)
    r0 = np.asarray(fwd.attrs["sphere_r0_m"], float)
    place = fwd.attrs.get("placement", "mni")

    def to_head(p_mm):
        if place == "fit":
            box = 0.5 * (con.centres.min(axis=0) + con.centres.max(axis=0))
            return r0 + forward.mni_to_head(p_mm - box, vectors=True) * fwd.attrs["placement_scale"] / 1000.0
        return forward.mni_to_head(p_mm)

    if np.abs(to_head(con.centres) - fwd["position"].values).max() > 1e-6:
        raise FieldError("cannot reproduce the forward model's region placement for the surface "
                         f"(placement {place!r}); surface fields would not line up with the regions")
    rr = to_head(surf["vertices"].values)
    limit = min(fwd.attrs["sphere_radii_m"]) - SURFACE_MARGIN_MM / 1000.0
    d = rr - r0
    dist = np.linalg.norm(d, axis=1)
    out = dist > limit
    rr[out] = r0 + d[out] * (limit / dist[out])[:, None]
    digest = hashlib.sha256(np.ascontiguousarray(rr).tobytes() + str(layout).encode()
                            + str(fwd.attrs["sphere_radii_m"]).encode()
                            + str(fwd.attrs["conductivity_S_m"]).encode()
                            + np.ascontiguousarray(fwd["sensor_position"].values).tobytes()).hexdigest()[:24]
    path = forward.cache_dir() / f"surface_field_{digest}.npy"
    field = forward.read_cached(path, (fwd.sizes["sensor"], len(rr), 3), cache)
    if field is None:
        G = forward.gain_at_positions(rr, layout, conductivity=conductivity).values   # (sensor, vertex, 3)
        field = (-(G - G.mean(axis=0, keepdims=True)) * 1e-3).astype(np.float32)
        if cache:
            forward.write_cached(path, field)
    nrm = forward.mni_to_head(surf["normals"].values, vectors=True)
    normal = -nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    ds = xr.Dataset(
        {"field": (("electrode", "vertex", "axis"), field, {"units": "V/m per mA"}),
         "normal": (("vertex", "axis"), normal, {"long_name": "inward normal (E_n > 0 depolarises)"}),
         "position": (("vertex", "axis"), rr, {"units": "m", "frame": "MNE head (RAS)"}),
         "vertex_region": surf["vertex_region"], "triangles": surf["triangles"]},
        coords={"electrode": [str(s) for s in fwd["sensor"].values], "axis": ["x", "y", "z"]},
        attrs={"layout": str(layout), "n_moved": int(out.sum()), "connectome": surf.attrs["connectome"],
               "units": "V/m per mA", "placement": place},
    )
    if cache:
        _FIELD_CACHE[key] = ds
    return ds


def montage_surface_field(montage: Montage, fields: xr.Dataset | None = None, connectome="tvb76") -> xr.Dataset:
    """``E`` (vertex, axis), ``E_n`` (vertex, inward) and ``E_mag`` of a montage on the cortex."""
    if fields is None:
        fields = surface_fields(connectome, field_layout(montage.active_electrodes or montage.electrodes))
    lookup = {str(e).upper(): i for i, e in enumerate(fields["electrode"].values)}
    names = montage.active_electrodes
    missing = [n for n in names if n.upper() not in lookup]
    if missing:
        raise FieldError(f"electrodes {missing} are not in the surface field's layout {fields.attrs['layout']!r}")
    cur = np.array([montage.currents_mA[n] for n in names])
    F = fields["field"].values
    E = np.tensordot(cur, F[[lookup[n.upper()] for n in names]].astype(float), axes=(0, 0)) \
        if names else np.zeros(F.shape[1:])
    return xr.Dataset(
        {"E": (("vertex", "axis"), E, {"units": "V/m"}),
         "E_n": (("vertex",), np.einsum("vk,vk->v", E, fields["normal"].values), {"units": "V/m"}),
         "E_mag": (("vertex",), np.linalg.norm(E, axis=1), {"units": "V/m"}),
         "position": fields["position"], "vertex_region": fields["vertex_region"],
         "triangles": fields["triangles"]},
        coords={"axis": ["x", "y", "z"]}, attrs={"montage": repr(montage), "layout": fields.attrs["layout"]})
