"""Batch-vectorised network integrator: the batch is the innermost axis.

The per-member kernel (:mod:`neurotwin_dash.models._kernel`) advances one member at a time, so
each step of a member is scalar code and the SIMD units do one lane of work. Here a *block* of
members (one or two 512-bit registers of them, :func:`block_width`) is advanced together: the state is
``(region, state, lane)``, the delay history ``(ring row, cvar, lane)``, so each
delayed-edge read is one contiguous vector load and each model equation is evaluated for all
lanes by one loop over lanes that LLVM vectorises. The model's equations are still its own
scalar numba functions (``dfun``, ``cvar``, ``observe``, ``noise_gain``), called once per lane
inside that loop; only the layout lives here.

What makes the lane loops vectorise (checked on the generated assembly, see
:func:`packed_instruction_count`, and on LLVM's vectoriser remarks):

* the kernel's array arguments are declared ``noalias`` (each block owns its arrays), without
  which LLVM keeps the loops scalar (a store to one array may change another's loads);
* the new state, rates and outputs of a lane are stored in rows a constant block width apart
  (:func:`_store_rows`): with a run-time row length LLVM wanted a run-time overlap check per
  pair of rows and left LaNMM's 28-state loop scalar (LaNMM Euler: 0.079 -> 0.044 CPU s per
  run per simulated second);
* ``error_model="numpy"`` (no division-by-zero branch), branch-free selects;
* 512-bit vectors (:func:`_vector_width`): LLVM's tuning for this CPU family prefers 256-bit;
* the delayed-edge sums are explicit LLVM vector code (:func:`_edge_sums`: one vector load,
  multiply and add per edge, rate and lane block, one pass over the edges for all rates);
* the delay history in 2 MB pages (:func:`huge_page_copy`): each step reads one row per edge
  scattered over the whole buffer, and with 4 kB pages the address translations missed the TLB
  (JR tvb76, one block on one thread: 0.0133 -> 0.0115 s per run per simulated s);
* one history ring per region, as long as its own longest outgoing delay needs (a smaller
  buffer per block: more of it stays in L2), each edge's read offset moved on by one row per
  step;
* blocks of two vectors (16 float64 members) where the batch fills them and the model has few
  states (:func:`block_width`): what is done once per region and step (the lane loops' set-up,
  the edges' offsets and weights) is shared by twice the members;
* with ``noise_rng="counter"`` the increments come from Philox inside the kernel, a vector of
  lanes at a time (:func:`~neurotwin_dash.models._kernel.counter_normals`), and the models'
  ``math.exp`` is the polynomial :func:`~neurotwin_dash.models._kernel.exp` (their numba
  functions relinked, see :func:`~neurotwin_dash.models._kernel.model_function`). With the
  default NumPy noise the sigmoid keeps libm's exp (a scalar call per lane), so that both kernels
  still give the numbers of every earlier run.

Results equal the per-member kernel's bit for bit (tested): the same operations in the same
order per member (the delayed input summed with the same four partial sums), the same noise
(NumPy: member ``b`` reads stream ``stream[b]``; counter: the same Philox counters), the same
drives, the same divergence rule (a member whose state leaves ``±bound`` or turns NaN is flagged
at the end of its sample, its samples from there on are NaN; its lane is then zeroed, so it
keeps computing finite numbers without touching other lanes).

Members must share the conduction delays (one ``speed_m_s`` for the batch); ``simulate`` uses
the per-member kernel otherwise.
"""
from __future__ import annotations

import math
import mmap
import re

import numpy as np
from llvmlite import ir
from numba import literally, njit, typeof, types
from numba.core import cgutils, cpu
from numba.core.options import TargetOptions
from numba.extending import intrinsic, overload

from . import MODELS
from ._kernel import counter_mode, counter_normals, model_function

__all__ = ["LANES", "BatchBlocks", "advance_lanes", "packed_instruction_count"]

#: Members per 512-bit vector of float64 (a block holds one or two vectors, :func:`block_width`).
LANES = 8


def lanes_of(dtype) -> int:
    """Members per block for a float type (numba or NumPy): one 512-bit vector (float64: 8,
    float32: 16)."""
    bits = dtype.bitwidth if hasattr(dtype, "bitwidth") else np.dtype(dtype).itemsize * 8
    return 512 // bits
#: Vector width in bits the kernel asks LLVM for (see :func:`_vector_width`).
VECTOR_BITS = 512

#: Relative cost per member of a block of one or two vectors of lanes. Measured in one process,
#: the widths alternating (JR tvb76, batch of 64, counter noise; 2 vCPU AMD EPYC (Zen 4),
#: 2026-12-06, best of 5 rounds, s per run per simulated s): float64 0.00753 -> 0.00659 on 2
#: threads and 0.01397 -> 0.01240 on one, float32 0.00480 -> 0.00437 on 2 threads. What is done
#: once per region and step whatever the lanes (the lane loops' set-up and remainder tests, the
#: edges' offsets and weights, the ring positions) is then shared by twice the members. Four
#: vectors were no better than two (float64: 0.01243 on one thread, 0.00671 on two, where the
#: two blocks' delay buffers, 4.8 MB each, no longer fit the caches).
_BLOCK_COST = {1: 1.0, 2: 0.88}
#: Models with more states than this keep one vector per block: LaNMM (28 states) gained nothing
#: from two (0.02555 and 0.02558, Heun, 2 threads; its lane loop already fills the registers)
_WIDE_MAX_STATES = 10


def block_width(model, dtype, n_batch: int, threads: int) -> int:
    """Members per block for a batch of ``n_batch`` on ``threads`` threads: one or two 512-bit
    vectors of ``dtype`` (one for models with more than :data:`_WIDE_MAX_STATES` states), the
    width with the least estimated time, where each thread advances its share of the padded
    blocks one after the other, each costing ``width × _BLOCK_COST``. So a small batch keeps
    every thread busy (16 float64 members on 2 threads: two blocks of 8) and a large one takes
    the wider blocks (64 members: four blocks of 16)."""
    v = lanes_of(dtype)
    widths = (1, 2) if len(MODELS[model].STATES) <= _WIDE_MAX_STATES else (1,)
    threads = max(1, int(threads))

    def cost(k):
        blocks = -(-n_batch // (v * k))
        return -(-blocks // threads) * v * k * _BLOCK_COST[k]
    return v * min(widths, key=lambda k: (cost(k), k))

# numba has no public decorator option for LLVM's ``noalias`` on array arguments (its parfor
# lowering sets the flag internally); this maps a ``_noalias`` option onto that flag. Only the
# kernel below uses it, and every call passes distinct arrays (BatchBlocks allocates them).
if not hasattr(cpu.CPUTargetOptions, "_noalias"):
    cpu.CPUTargetOptions._noalias = TargetOptions.Mapping("noalias")


def _model(tag):
    return MODELS[tag.literal_value.split(":")[0]]


def _generated(name, args, body):
    """Compile the Python source of an overload implementation (``body`` indented lines)."""
    ns = {"HALF32": np.float32(0.5)}
    exec(f"def {name}({', '.join(args)}):\n" + "".join(f"    {ln}\n" for ln in body), ns)
    return ns[name]


def _lane_tuple(tag, a, j, l, n):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(_lane_tuple, inline="always")
def _ov_lane_tuple(tag, a, j, l, n):
    """``(a[j, 0, l], …, a[j, N-1, l])`` with ``N`` = ``len(model.<n>)`` (a string literal:
    ``"STATES"``, ``"PARAMS"``, ``"CVARS"`` or ``"NOISE_STATES"``): one lane's values as a tuple
    with constant indices, so that they stay in registers."""
    if not isinstance(tag, types.StringLiteral) or not isinstance(n, types.StringLiteral):
        return None
    count = len(getattr(_model(tag), n.literal_value))
    items = "".join(f"a[j, {k}, l], " for k in range(count))
    return _generated("impl", ("tag", "a", "j", "l", "n"), [f"return ({items})"])


def _store_lane(tag, a, j, l, values):  # pragma: no cover
    raise NotImplementedError


@overload(_store_lane, inline="always")
def _ov_store_lane(tag, a, j, l, values):
    """``a[j, k, l] = values[k]`` for every element of the tuple ``values``."""
    body = [f"a[j, {k}, l] = values[{k}]" for k in range(len(values))] or ["pass"]
    return _generated("impl", ("tag", "a", "j", "l", "values"), body)


def _advance(tag, x, f, g, h, mean, kick):  # pragma: no cover
    raise NotImplementedError


@overload(_advance, inline="always")
def _ov_advance(tag, x, f, g, h, mean, kick):
    """The Euler (``x + h f``) or Heun (``x + h (0.5 (f + g))``) update of a state tuple plus the
    noise kick on the model's ``NOISE_STATES``, in the per-member kernel's order of operations."""
    if not isinstance(tag, types.StringLiteral) or not isinstance(mean, types.BooleanLiteral):
        return None
    noisy = {k: m for m, k in enumerate(_model(tag).NOISE_STATES)}
    # the constant ½ in the state's type (a float64 literal would promote float32 arithmetic)
    half = "HALF32" if "float32" in tag.literal_value.split(":")[2:] else "0.5"
    items = []
    for k in range(len(x)):
        step = f"(x[{k}] + h * ({half} * (f[{k}] + g[{k}])))" if mean.literal_value else f"(x[{k}] + h * f[{k}])"
        items.append(f"{step} + kick[{noisy[k]}]" if k in noisy else step)
    return _generated("impl", ("tag", "x", "f", "g", "h", "mean", "kick"),
                      [f"return ({', '.join(items)},)"])


def _store_rows(a, width, l, values):  # pragma: no cover
    raise NotImplementedError


@overload(_store_rows, inline="always")
def _ov_store_rows(a, width, l, values):
    """``a[k · width + l] = values[k]`` for every element of the tuple ``values``, ``width`` (a
    literal) the lanes of the block: rows a constant apart, so LLVM sees that the stores of one
    lane loop never overlap (with a run-time row length it wanted a run-time overlap check per
    pair of rows, and above a few dozen pairs, e.g. LaNMM's 28 states, left the loop scalar)."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    n = width.literal_value
    body = [f"a[{k * n} + l] = values[{k}]" for k in range(len(values))] or ["pass"]
    return _generated("impl", ("a", "width", "l", "values"), body)


def _row_tuple(tag, a, width, l, n):  # pragma: no cover
    raise NotImplementedError


@overload(_row_tuple, inline="always")
def _ov_row_tuple(tag, a, width, l, n):
    """``(a[0 · width + l], …)``: one lane of an array written by :func:`_store_rows` (``n`` as
    for :func:`_lane_tuple`)."""
    if not (isinstance(tag, types.StringLiteral) and isinstance(n, types.StringLiteral)
            and isinstance(width, types.IntegerLiteral)):
        return None
    count = len(getattr(_model(tag), n.literal_value))
    w = width.literal_value
    items = "".join(f"a[{k * w} + l], " for k in range(count))
    return _generated("impl", ("tag", "a", "width", "l", "n"), [f"return ({items})"])


def _row_len(width):  # pragma: no cover
    raise NotImplementedError


@overload(_row_len, inline="always")
def _ov_row_len(width):
    """The lanes of the block (the literal ``width``) as a constant (see :func:`_store_rows`)."""
    if not isinstance(width, types.IntegerLiteral):
        return None
    n = width.literal_value
    return lambda width: n


def _model_call(tag, fname, args):  # pragma: no cover
    raise NotImplementedError


@overload(_model_call, inline="always")
def _ov_model_call(tag, fname, args):
    """``model.<fname>(*args)`` for the model of ``tag``."""
    if not isinstance(tag, types.StringLiteral) or not isinstance(fname, types.StringLiteral):
        return None
    f = model_function(tag.literal_value, fname.literal_value)
    unpacked = ", ".join(f"args[{k}]" for k in range(len(args)))

    ns = {"f": f}
    exec(f"def impl(tag, fname, args):\n    return f({unpacked})\n", ns)
    return ns["impl"]


def _pick(values, r):  # pragma: no cover
    raise NotImplementedError


@overload(_pick, inline="always")
def _ov_pick(values, r):
    """``values[r]`` of a float tuple as a chain of selects (no stack copy of the tuple)."""
    body = ["v = values[0]"] + [f"v = values[{k}] if r == {k} else v" for k in range(1, len(values))]
    return _generated("impl", ("values", "r"), body + ["return v"])


@intrinsic
def _vector_width(typingctx, bits):
    """Ask LLVM to vectorise the calling function with ``bits``-bit vectors (a literal).

    LLVM's tuning for this family of CPUs prefers 256-bit vectors even where AVX-512 exists
    (``prefer-256-bit``), which halves the lanes per instruction of the kernel's loops; numba has
    no option for the per-function override, so this adds LLVM's own function attributes
    (``prefer-vector-width``, ``min-legal-vector-width``) to the function being compiled. Without
    AVX-512 the attributes change nothing."""
    if not isinstance(bits, types.IntegerLiteral):
        return None
    sig = types.none(bits)

    def codegen(context, builder, signature, args):
        attrs = builder.function.attributes
        # llvmlite's attribute set accepts only enum attributes; these are string attributes
        set.add(attrs, f'"prefer-vector-width"="{bits.literal_value}"')
        set.add(attrs, f'"min-legal-vector-width"="{bits.literal_value}"')
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _edge_sums(typingctx, tag, width, H, eoff, weights, e0, e1, out):
    """``out[c, q:q + width] = (a0 + a1) + (a2 + a3)`` for every transmitted rate ``c`` of the
    model of ``tag``, where ``a0..a3`` are the per-member kernel's four partial sums of
    ``weights[e] · H.flat[eoff[e] + c · width + q]`` over the edges ``e0 <= e < e1`` (edge ``e``
    into ``a(e − e0) mod 4``, the last ``(e1 − e0) mod 4`` into ``a0``), ``q = 0 … width − 1``,
    ``width`` (a literal) the lanes of the block (float32: the weight rounded to float32) and
    ``eoff[e]`` the element of ``H`` where this step's delayed row of edge ``e`` starts. Per edge one offset, and per rate one vector load, one multiply and one add on all
    lanes, as LLVM IR: one pass over the edges for all rates (LaNMM has two), whose rows lie side
    by side. Written out because the same loop in numba code kept its accumulators in memory (a
    store and reload per edge) and computed the row addresses with multiplies by run-time
    strides."""
    if not isinstance(tag, types.StringLiteral) or not isinstance(width, types.IntegerLiteral):
        return None
    W = width.literal_value
    NC = len(_model(tag).CVARS)
    sig = types.void(tag, width, H, eoff, weights, e0, e1, out)

    def codegen(context, builder, signature, args):
        Ha = context.make_array(signature.args[2])(context, builder, args[2])
        eo = context.make_array(signature.args[3])(context, builder, args[3])
        wa = context.make_array(signature.args[4])(context, builder, args[4])
        oa = context.make_array(signature.args[7])(context, builder, args[7])
        e0v, e1v = args[5:7]
        i64, i32 = ir.IntType(64), ir.IntType(32)
        elt = context.get_value_type(signature.args[2].dtype)
        single = signature.args[2].dtype == types.float32
        vt = ir.VectorType(elt, W)
        zero = ir.Constant(vt, [0.0] * W)
        four = ir.Constant(i64, 4)
        one = ir.Constant(i64, 1)
        bmask = ir.Constant(ir.VectorType(i32, W), [0] * W)

        def load_rows(e):
            off = builder.load(builder.gep(eo.data, [e], inbounds=True))
            return [builder.load(builder.bitcast(builder.gep(Ha.data, [builder.add(off, ir.Constant(i64, c * W))],
                                                             inbounds=True), vt.as_pointer()), align=8)
                    for c in range(NC)]

        def weight(e):
            w = builder.load(builder.gep(wa.data, [e], inbounds=True))
            w = builder.fptrunc(w, elt) if single else w
            v = builder.insert_element(ir.Constant(vt, ir.Undefined), w, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), bmask)

        fn = builder.function
        entry = builder.block
        mcond = fn.append_basic_block("es.main.cond")
        mbody = fn.append_basic_block("es.main.body")
        tcond = fn.append_basic_block("es.tail.cond")
        tbody = fn.append_basic_block("es.tail.body")
        done = fn.append_basic_block("es.done")
        builder.branch(mcond)

        builder.position_at_end(mcond)
        e = builder.phi(i64)
        acc = [[builder.phi(vt) for _ in range(4)] for _ in range(NC)]
        e.add_incoming(e0v, entry)
        for row in acc:
            for a in row:
                a.add_incoming(zero, entry)
        builder.cbranch(builder.icmp_signed("<=", builder.add(e, four), e1v), mbody, tcond)

        builder.position_at_end(mbody)
        new = [[None] * 4 for _ in range(NC)]
        for k in range(4):
            ek = builder.add(e, ir.Constant(i64, k))
            w = weight(ek)
            for c, v in enumerate(load_rows(ek)):
                new[c][k] = builder.fadd(acc[c][k], builder.fmul(w, v))
        e.add_incoming(builder.add(e, four), mbody)
        for c in range(NC):
            for a, n in zip(acc[c], new[c]):
                a.add_incoming(n, mbody)
        builder.branch(mcond)

        builder.position_at_end(tcond)
        et = builder.phi(i64)
        t0 = [builder.phi(vt) for _ in range(NC)]
        et.add_incoming(e, mcond)
        for c in range(NC):
            t0[c].add_incoming(acc[c][0], mcond)
        builder.cbranch(builder.icmp_signed("<", et, e1v), tbody, done)

        builder.position_at_end(tbody)
        w = weight(et)
        t1 = [builder.fadd(t0[c], builder.fmul(w, v)) for c, v in enumerate(load_rows(et))]
        et.add_incoming(builder.add(et, one), tbody)
        for c in range(NC):
            t0[c].add_incoming(t1[c], tbody)
        builder.branch(tcond)

        builder.position_at_end(done)
        _, onl = cgutils.unpack_tuple(builder, oa.shape, 2)
        for c in range(NC):
            s = builder.fadd(builder.fadd(t0[c], acc[c][1]), builder.fadd(acc[c][2], acc[c][3]))
            optr = builder.gep(oa.data, [builder.mul(ir.Constant(i64, c), onl)], inbounds=True)
            builder.store(s, builder.bitcast(optr, vt.as_pointer()), align=8)
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, nogil=True, error_model="numpy", _noalias=True)
def advance_lanes(tag, heun, width, X, H, t0, P, K, indptr, weights, ring, edge, noise, stream, keys, drv_space,
                  drv_wave, drv_target, dt, n_steps, decim, rec, n_out, out, dead, bound, G, CIN, U,
                  ACC, SUM, BAD, OBS, XN, RN, Z, ZS, EOFF, RPOS):
    """Advance one block of ``width`` members by ``n_steps`` steps (in place).

    Parameters
    ----------
    tag : str literal
        Model key (:func:`~neurotwin_dash.models._kernel.model_tag`).
    heun : bool literal
        Stochastic Heun instead of Euler–Maruyama.
    width : int literal
        Lanes of the block, ``X.shape[2]``: one or two vectors (:func:`block_width`); the
        row length of ``XN``, ``RN``, ``OBS`` and the vector type of the edge sums.
    X : (region, state, width)
    H : (rows, cvar, width)
        Delay history: one ring buffer per region, as long as that region's longest outgoing
        delay needs (row ``ring[0, r] + t % ring[1, r]`` holds the rates of step ``t`` of region
        ``r``), then the transmitted rate, then the lanes. One copy (the per-member kernel keeps
        two of a ring as long as the longest delay of all): the block's buffer then sits in a
        core's L2 cache (tvb76 at 4 m/s: 1.2 MB for 8 float64 lanes, 1.7 MB with one length).
    t0 : int
        Global index of the first step.
    P : (region, n_params, width); K : (region, width) coupling
    indptr, weights : CSR of the non-zero weights (row = target).
    ring : (2, region) int64
        Each region's first row in ``H`` and ring length (steps).
    edge : (3, nnz) int64
        Per edge (shared by the lanes: one set of delays) the first element of its source's
        ring in ``H``, that ring's length in elements (steps × ``cvar · width``) and the delay in
        steps.
    noise : (stream, n_steps, region, n_noise); stream : (width,) int64
        NumPy increments and the stream each lane reads (not read with the counter generator).
    keys : (width,) int64
        Each lane's seed, the key of the counter generator (``tag`` ending in ``:counter``).
    drv_space : (drive, region, width); drv_wave : (drive, n_steps + 1); drv_target : (drive,)
    dt, n_steps, decim, rec, n_out, bound
        As in :func:`~neurotwin_dash.models._kernel.integrate`.
    out : (n_rec, n_steps // decim, region, width) or (0, 0, 0, width) (no record)
    dead : (width,) bool
        Members already diverged (their samples are NaN); set for those that diverge now.
    G, CIN, U, ACC, SUM, BAD
        Scratch: (region, n_noise, width), (1, cvar, width), (4, region, width),
        (n_rec, region, width), (cvar, width), (width,) float64.
    OBS, RN, XN : (n_out · width,), (cvar · width,), (state · width,)
        Scratch: the outputs, the new rates and the new state of a region, one row of
        ``width`` per quantity (a constant row length, see :func:`_store_rows`; at most
        ``width`` lanes used).
    Z : (2 · ⌈region · n_noise / 2⌉, width)
        Scratch: a step's increments from the counter generator, (region, noise) flattened.
    ZS : (2 · ⌈region · n_noise / 2⌉,)
        Scratch: the same for one lane, when every lane has the same key (drawn once).
    EOFF : (nnz,) int64; RPOS : (region,) int64
        Scratch: the element of ``H`` each edge reads this step, each region's ring slot of
        this step (both advanced by one step at the end of a step: no division per edge).
    """
    literally(tag)
    literally(heun)
    literally(width)
    _vector_width(VECTOR_BITS)
    n_region = X.shape[0]
    n_state = X.shape[1]
    # a run-time lane count: LLVM's loop vectoriser then keeps each lane loop a loop (with a
    # compile-time count it unrolls it first, and numba leaves the SLP vectoriser off)
    nl = X.shape[2]
    n_cvar = H.shape[1]
    hrow = n_cvar * nl   # elements of H per history row
    n_edge = EOFF.shape[0]
    n_noise = G.shape[1]
    n_drive = drv_target.shape[0]
    n_rec = rec.shape[0]
    record = out.shape[0] > 0
    counter = counter_mode(tag)
    n_pair = Z.shape[0] // 2
    one_key = True
    for l in range(nl):
        one_key = one_key and keys[l] == keys[0]
    sqdt = math.sqrt(dt)
    for e in range(n_edge):
        EOFF[e] = edge[0, e] + (t0 - edge[2, e]) % (edge[1, e] // hrow) * hrow
    for i in range(n_region):
        RPOS[i] = t0 % ring[1, i]
    for i in range(n_region):
        for l in range(nl):
            gl = _model_call(tag, "noise_gain", (_lane_tuple(tag, P, i, l, "PARAMS"),))
            for m in range(n_noise):
                G[i, m, l] = gl[m] * sqdt
    # U[0], U[1]: membrane and rate drives of step s; U[2], U[3]: of step s + 1
    U[:] = 0.0
    for d in range(n_drive):
        row = 2 if drv_target[d] == 0 else 3
        w = drv_wave[d, 0]
        for i in range(n_region):
            for l in range(nl):
                U[row, i, l] += drv_space[d, i, l] * w
    ACC[:] = 0.0
    need_obs = False
    for q in range(n_rec):
        if rec[q] < n_out:
            need_obs = True
    for s in range(n_steps):
        if counter and one_key:
            # every lane has the same key (common random numbers, the sweeps' default): the
            # step's increments drawn once, a vector of counters at a time, and copied to the
            # lanes (the same numbers as drawn per lane below, at 1/width of the cost)
            for j in range(n_pair):
                z0, z1 = counter_normals(keys[0], t0 + s, j)
                ZS[2 * j] = z0
                ZS[2 * j + 1] = z1
            for j in range(2 * n_pair):
                for l in range(nl):
                    Z[j, l] = ZS[j]
        elif counter:
            # the step's increments for every lane at once (the per-member kernel draws the
            # same numbers one member at a time)
            for j in range(n_pair):
                for l in range(nl):
                    z0, z1 = counter_normals(keys[l], t0 + s, j)
                    Z[2 * j, l] = z0
                    Z[2 * j + 1, l] = z1
        if n_drive > 0:
            for i in range(n_region):
                for l in range(nl):
                    U[0, i, l] = U[2, i, l]
                    U[1, i, l] = U[3, i, l]
                    U[2, i, l] = 0.0
                    U[3, i, l] = 0.0
            for d in range(n_drive):
                row = 2 if drv_target[d] == 0 else 3
                w = drv_wave[d, s + 1]
                for i in range(n_region):
                    for l in range(nl):
                        U[row, i, l] += drv_space[d, i, l] * w
        for i in range(n_region):
            # the per-member kernel's four partial sums, a vector of lanes at a time (one
            # vector load and multiply-add per edge and rate, see _edge_sums): the same rounding
            _edge_sums(tag, width, H, EOFF, weights, indptr[i], indptr[i + 1], SUM)
            for c in range(n_cvar):
                for l in range(nl):
                    CIN[0, c, l] = K[i, l] * SUM[c, l]
            here = ring[0, i] + RPOS[i]          # this step's rates of region i
            nxt = RPOS[i] + 1
            there = ring[0, i] + (nxt if nxt < ring[1, i] else 0)   # the next step's
            # the step of every lane: one loop without inner loops or branches, which LLVM
            # vectorises (each tuple element becomes one vector)
            for l in range(nl):
                x = _lane_tuple(tag, X, i, l, "STATES")
                p = _lane_tuple(tag, P, i, l, "PARAMS")
                rs = _lane_tuple(tag, H, here, l, "CVARS")
                cin = _lane_tuple(tag, CIN, 0, l, "CVARS")
                um1 = U[2, i, l]
                kick = _scaled(_lane_tuple(tag, G, i, l, "NOISE_STATES"),
                               _noise_tuple(tag, noise, Z, stream[l], s, i, l))
                f = _model_call(tag, "dfun", (x, p, rs, cin, U[0, i, l], U[1, i, l]))
                if heun:
                    xt = _advance(tag, x, f, f, dt, False, kick)
                    rt = _model_call(tag, "cvar", (xt, p, um1))
                    g = _model_call(tag, "dfun", (xt, p, rt, cin, um1, U[3, i, l]))
                    xn = _advance(tag, x, f, g, dt, True, kick)
                else:
                    xn = _advance(tag, x, f, f, dt, False, kick)
                _store_rows(XN, width, l, xn)
                _store_rows(RN, width, l, _model_call(tag, "cvar", (xn, p, um1)))
            # the new state and rates into X and the history, outside the loop above: stores into
            # arrays that loop also reads need run-time overlap checks, which LLVM gets wrong
            # here (the loop then runs its scalar version)
            for j in range(n_state):
                for l in range(nl):
                    X[i, j, l] = XN[j * _row_len(width) + l]
            for c in range(n_cvar):
                for l in range(nl):
                    H[there, c, l] = RN[c * _row_len(width) + l]
            if record:
                if need_obs:
                    for l in range(nl):
                        x = _row_tuple(tag, XN, width, l, "STATES")
                        p = _lane_tuple(tag, P, i, l, "PARAMS")
                        rn = _row_tuple(tag, RN, width, l, "CVARS")
                        _store_rows(OBS, width, l, _model_call(tag, "observe", (x, p, rn, U[2, i, l])))
                for q in range(n_rec):
                    r = rec[q]
                    if r < n_out:
                        for l in range(nl):
                            ACC[q, i, l] += OBS[r * _row_len(width) + l]
                    else:
                        for l in range(nl):
                            ACC[q, i, l] += XN[(r - n_out) * _row_len(width) + l]
        # one step on: every ring slot and edge offset moves by one row (wrapping round its ring)
        for i in range(n_region):
            nxt = RPOS[i] + 1
            RPOS[i] = nxt if nxt < ring[1, i] else 0
        for e in range(n_edge):
            v = EOFF[e] + hrow
            EOFF[e] = v - edge[1, e] if v >= edge[0, e] + edge[1, e] else v
        if (s + 1) % decim == 0:
            for l in range(nl):
                BAD[l] = 0.0
            for i in range(n_region):
                for j in range(n_state):
                    for l in range(nl):
                        # also catches NaN
                        BAD[l] = BAD[l] if abs(X[i, j, l]) <= bound else 1.0
            if record:
                n = (s + 1) // decim - 1
                for q in range(n_rec):
                    for i in range(n_region):
                        for l in range(nl):
                            ok = BAD[l] == 0.0 and not dead[l]
                            out[q, n, i, l] = ACC[q, i, l] / decim if ok else np.nan
                            ACC[q, i, l] = 0.0
            for l in range(nl):
                if BAD[l] != 0.0 and not dead[l]:
                    dead[l] = True
                    # a diverged lane restarts from zeros so that it keeps computing finite
                    # numbers (its samples stay NaN through ``dead``)
                    X[:, :, l] = 0.0
                    H[:, :, l] = 0.0


def _noise_tuple(tag, noise, Z, st, s, i, l):  # pragma: no cover
    raise NotImplementedError


@overload(_noise_tuple, inline="always")
def _ov_noise_tuple(tag, noise, Z, st, s, i, l):
    """The increments of region ``i`` (one per ``NOISE_STATES``) as a tuple: ``noise[st, s, i,
    m]`` from NumPy's streams, or ``Z[i · n_noise + m, l]`` from the counter generator."""
    if not isinstance(tag, types.StringLiteral):
        return None
    n = len(_model(tag).NOISE_STATES)
    if "counter" in tag.literal_value.split(":")[2:]:
        items = "".join(f"Z[i * {n} + {m}, l], " for m in range(n))
    else:
        items = "".join(f"noise[st, s, i, {m}], " for m in range(n))
    return _generated("impl", ("tag", "noise", "Z", "st", "s", "i", "l"), [f"return ({items})"])


def _scaled(a, b):  # pragma: no cover
    raise NotImplementedError


@overload(_scaled, inline="always")
def _ov_scaled(a, b):
    """Element-wise product of two tuples of the same length."""
    items = "".join(f"a[{k}] * b[{k}], " for k in range(len(a)))
    return _generated("impl", ("a", "b"), [f"return ({items})"])


_ENTRY_POINTS: dict = {}
#: arguments of :func:`advance_lanes` typed as compile-time literals (model tag, method)
_LITERAL_ARGS = ("tag", "heun", "width")


def _entry_point(args):
    """The machine-code entry point of :func:`advance_lanes` for these arguments (compiled once
    per model, method and array types, or loaded from numba's on-disk cache): calling the
    dispatcher with a plain ``str`` would retype the call every time."""
    names = advance_lanes.py_func.__code__.co_varnames[:len(args)]
    sig = tuple(types.literal(a) if n in _LITERAL_ARGS else typeof(a) for n, a in zip(names, args))
    ep = _ENTRY_POINTS.get(sig)
    if ep is None:
        advance_lanes.compile(sig)
        ep = _ENTRY_POINTS[sig] = advance_lanes.overloads[sig].entry_point
    return ep


#: smallest array :func:`huge_page_copy` puts in 2 MB pages (smaller ones: the rounding up wastes
#: more memory than the TLB saves)
HUGE_PAGE_MIN_BYTES = 512 << 10
_HUGE_PAGE = 2 << 20


def huge_page_copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` in memory advised for transparent huge pages (2 MB), where
    the OS offers them (Linux, ``madvise``); otherwise, or below :data:`HUGE_PAGE_MIN_BYTES`, a
    plain copy.

    The kernel reads the delayed row of every edge each step, one 64-byte row per edge spread over
    the whole delay buffer (1.2 MB per block for tvb76 at 4 m/s, ~300 pages of 4 kB): the page
    walks of those reads cost about as much as the reads. Measured, same process, old and new
    interleaved (2 vCPU Xeon, load 0.4-1.0): JR tvb76 batch of 64, counter noise, 2 threads
    0.0071 -> 0.0067 s per run per simulated s (float64), 0.0050 -> 0.0042 (float32); one block
    on one thread 0.0133 -> 0.0115; LaNMM (Heun) unchanged. The values are the same either way.
    Physical memory is rounded up to whole 2 MB pages."""
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if advise is None or a.nbytes < HUGE_PAGE_MIN_BYTES:
        return np.array(a, order="C", copy=True)
    size = -(-a.nbytes // _HUGE_PAGE) * _HUGE_PAGE
    # one page more than needed, so that a 2 MB-aligned start exists inside the mapping
    region = mmap.mmap(-1, size + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(region, dtype=np.uint8)      # keeps ``region`` alive
    start = (-raw.ctypes.data) % _HUGE_PAGE
    try:
        region.madvise(advise, start, size)
    except OSError:                                  # huge pages disabled: plain pages
        pass
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


class BatchBlocks:
    """A batch held as blocks of one or two vectors of members (:func:`block_width`) in the
    lanes-innermost layout.

    Built once per run from the per-member arrays; :meth:`advance` integrates a chunk of steps
    for every block (blocks are split over threads; the kernel releases the GIL). The last
    block is padded with copies of the last member, whose results are dropped.

    Parameters
    ----------
    tag : str
        Model key (:func:`~neurotwin_dash.models._kernel.model_tag`).
    x : (batch, region, state); hist : (batch, cvar, region, 2 · slots)
        Initial state and delay history in the per-member kernel's layout, at step 0.
    offsets : (nnz,) int64
        The per-member kernel's edge offsets (:func:`~neurotwin_dash.models._kernel.edge_offsets`),
        the same for every member: the sources and delays of the edges, from which each
        region's ring is made as long as its longest outgoing delay needs.
    params : (batch, region, n_params); coupling : (batch, region)
    drv_space : (drive, batch, region)
    stream : (batch,) int64
        Noise stream read by each member.
    keys : (batch,) int64
        Each member's seed (the counter generator's key).
    n_noise, n_rec, n_out : int
        Noise components of the model; recorded quantities; model outputs.
    dtype : {"float64", "float32"}
        Type of the blocks' arrays and arithmetic (float32: 16 lanes per vector).
    threads : int
        Threads that will advance the blocks (the block width depends on it, :func:`block_width`).
    """

    def __init__(self, tag, x, hist, params, coupling, drv_space, stream, keys, n_noise, n_rec, n_out,
                 offsets, dtype="float64", threads=1):
        self.tag = tag
        self.dtype = ft = np.dtype(dtype)
        self.n_batch, n_region, _ = x.shape
        n_cvar = hist.shape[1]
        # always whole blocks of one, two or four 512-bit vectors, padded: a block of half a vector
        # runs the lane loops (vectorised a whole vector wide) in their scalar remainder and costs
        # more than a whole block (JR tvb76, float64: 0.17 against 0.13 CPU s per block per
        # simulated s)
        self.width = nl = block_width(tag.split(":")[0], ft, self.n_batch, threads)
        # one ring per region, as long as its longest outgoing delay + 2 (the kernel writes the
        # next step's row while later regions of this step still read the oldest): tvb76 at
        # 4 m/s holds 18,564 rows instead of 76 × 348 = 26,448
        n_slot = hist.shape[3] // 2
        self.offsets = np.array(offsets, dtype=np.int64)
        src, delay = self.offsets // (2 * n_slot), n_slot - self.offsets % (2 * n_slot)
        length = np.full(n_region, 2, dtype=np.int64)
        np.maximum.at(length, src, delay + 2)
        start = np.concatenate([[0], np.cumsum(length)[:-1]])
        self.ring = np.ascontiguousarray(np.stack([start, length]))
        # per edge: its source ring's first element in H, that ring's length in elements, the delay
        row = n_cvar * nl
        self.edge = np.ascontiguousarray(np.stack([start[src] * row, length[src] * row, delay]))
        # row start[r] + k of the ring holds the step t <= 0 with t % length[r] == k, which the
        # per-member layout holds in slot t % n_slot
        rr = np.repeat(np.arange(n_region), length)
        kk = np.arange(length.sum()) - np.repeat(start, length)
        gg = -((-kk) % np.repeat(length, length)) % n_slot
        n_block = -(-self.n_batch // nl)
        member = np.minimum(np.arange(n_block * nl), self.n_batch - 1).reshape(n_block, nl)
        self.members = [m[:max(0, min(nl, self.n_batch - k * nl))] for k, m in enumerate(member)]
        self.blocks = []
        for m in member:
            self.blocks.append(dict(
                X=np.ascontiguousarray(x[m].transpose(1, 2, 0), dtype=ft),
                H=huge_page_copy(hist[m][:, :, rr, gg].transpose(2, 1, 0).astype(ft)),
                P=np.ascontiguousarray(params[m].transpose(1, 2, 0), dtype=ft),
                K=np.ascontiguousarray(coupling[m].T, dtype=ft),
                DS=np.ascontiguousarray(drv_space[:, m, :].transpose(0, 2, 1), dtype=ft),
                stream=np.ascontiguousarray(stream[m]),
                keys=np.ascontiguousarray(keys[m], dtype=np.int64),
                dead=np.zeros(nl, dtype=bool),
                G=np.zeros((n_region, n_noise, nl), ft),
                CIN=np.zeros((1, n_cvar, nl), ft),
                U=np.zeros((4, n_region, nl), ft),
                ACC=np.zeros((n_rec, n_region, nl), ft),
                SUM=np.zeros((n_cvar, nl), ft),
                BAD=np.zeros(nl, ft),
                OBS=np.zeros(n_out * nl, ft),
                XN=np.zeros(x.shape[2] * nl, ft),
                RN=np.zeros(n_cvar * nl, ft),
                Z=np.zeros((2 * ((n_region * n_noise + 1) // 2), nl), ft),
                ZS=np.zeros(2 * ((n_region * n_noise + 1) // 2), ft),
                EOFF=np.zeros(len(self.offsets), np.int64),
                RPOS=np.zeros(n_region, np.int64),
            ))

    def advance(self, args, heun, workers=None):
        """Advance every block by one chunk: ``args`` is the per-member kernel's
        :class:`~neurotwin_dash.models._kernel.KernelArgs` (its ``x``, ``hist``, ``params``,
        ``coupling``, ``drv_space`` and ``stream`` are ignored: the blocks hold their own; its
        ``offsets`` must be the same for every member). ``args.out`` and ``args.diverged`` are
        filled; ``workers`` (a thread pool) advances blocks concurrently."""
        t0, indptr, weights, noise = args.t0, args.indptr, args.weights, args.noise
        drv_wave, drv_target, dt, n_steps, decim = (args.drv_wave, args.drv_target, args.dt, args.n_steps,
                                                    args.decim)
        rec, n_out, out, diverged, bound = args.rec, args.n_out, args.out, args.diverged, args.bound
        record = out.shape[0] > 0
        n_samp = n_steps // decim if record else 0
        n_region = self.blocks[0]["X"].shape[0]
        if not np.array_equal(args.offsets[0], self.offsets):
            raise ValueError("BatchBlocks: the edges' delays changed since the blocks were made")
        ring, edge = self.ring, self.edge
        bufs = [np.empty((len(rec) if record else 0, n_samp, n_region if record else 0, b["X"].shape[2]),
                         self.dtype) for b in self.blocks]
        dt = self.dtype.type(dt)

        def run(k):
            b = self.blocks[k]
            a = (self.tag, bool(heun), self.width, b["X"], b["H"], t0, b["P"], b["K"], indptr, weights, ring, edge,
                 noise, b["stream"], b["keys"], b["DS"], drv_wave, drv_target, dt, n_steps, decim, rec, n_out,
                 bufs[k], b["dead"], bound, b["G"], b["CIN"], b["U"], b["ACC"], b["SUM"], b["BAD"],
                 b["OBS"], b["XN"], b["RN"], b["Z"], b["ZS"], b["EOFF"], b["RPOS"])
            _entry_point(a)(*a)

        if workers is None or len(self.blocks) == 1:
            for k in range(len(self.blocks)):
                run(k)
        else:
            for f in [workers.submit(run, k) for k in range(len(self.blocks))]:
                f.result()
        for k, m in enumerate(self.members):
            if record:
                out[:, m] = bufs[k][..., :len(m)].transpose(0, 3, 1, 2)
            diverged[m] = self.blocks[k]["dead"][:len(m)]


def packed_instruction_count(tag, heun=False):
    """Count the packed (``…pd`` on ``xmm/ymm/zmm``) floating-point instructions in the compiled
    kernel of ``tag`` (compiled first with :class:`BatchBlocks` types): evidence that the lane
    loops vectorised. Returns ``{"xmm": n, "ymm": n, "zmm": n, "scalar_sd": n}``."""
    counts = {"xmm": 0, "ymm": 0, "zmm": 0, "scalar_sd": 0}
    for sig, asm in advance_lanes.inspect_asm().items():
        if sig[0] != types.literal(tag) or sig[1] != types.literal(bool(heun)):
            continue
        for line in asm.splitlines():
            mnem = line.strip().split(None, 1)
            if not mnem or not mnem[0].startswith("v"):
                continue
            if mnem[0].endswith("pd"):
                reg = re.search(r"%(xmm|ymm|zmm)", line)
                if reg:
                    counts[reg.group(1)] += 1
            elif mnem[0].endswith("sd"):
                counts["scalar_sd"] += 1
    return counts
