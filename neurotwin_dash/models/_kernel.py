"""The shared numba network integrator and its plain NumPy reference.

One kernel serves every model: the model is chosen at compile time through a string literal
``tag = "<model name>:<source hash>"``; the ``_dfun``/``_cvar``/``_observe``/``_noise_gain``
overloads resolve to that model's numba functions, so only the chosen model is compiled and
the machine code is cached on disk per tag. The source hash in the tag makes a changed model
file (or this file) compile afresh instead of reusing a stale cached kernel (numba only checks
the timestamp of the file that holds the cached function, not of the functions it calls).

State is resumable: ``x`` (batch, region, state), the delay history ``hist``
(batch, cvar, slots, region) and the global step counter ``t0`` are all a chunk needs.

The arrays and numbers of one call travel as one :class:`KernelArgs` bundle (a named tuple,
which numba passes as a struct: no cost over positional arguments); the model tag and the
integration method are separate compile-time literals.
"""
from __future__ import annotations

import hashlib
import inspect
import math
from functools import lru_cache
from pathlib import Path
from types import FunctionType, ModuleType
from typing import NamedTuple

import numpy as np
from numba import literally, njit, typeof, types
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic, overload

from . import MODELS

__all__ = ["integrate", "integrate_numpy", "model_tag", "compiled_integrate", "edge_offsets", "sigmoid",
           "drives_at", "KernelArgs", "exp", "kernel_tag", "model_function", "NOISE_RNGS", "philox4x32",
           "counter_normals", "counter_noise", "log_unit", "cos_sin_turn", "counter_mode", "DTYPES", "exp32",
           "MATH_MODES", "exp_fast", "mode_error"]

#: Noise generators: ``"numpy"`` (``numpy.random.default_rng(seed)``, drawn outside the kernel;
#: the default) and ``"counter"`` (Philox4x32-10 inside the kernel, see :func:`counter_normals`;
#: the models' exponentials then use the vectorisable :func:`exp`).
NOISE_RNGS = ("numpy", "counter")
#: Floating-point types of a run: ``"float64"`` (default) or ``"float32"`` (batch kernel only).
DTYPES = ("float64", "float32")
#: Exponentials of the models' equations: ``"default"`` (libm's with NumPy noise, the polynomial
#: :func:`exp`, ≤ 1e-15 from libm, with the counter generator: the numbers of every earlier run)
#: or ``"fast"`` (opt-in, counter generator and float64 only: :func:`exp_fast`, a polynomial of
#: degree 9 without the special-value handling, ≤ 2e-14 from libm in its range; other numbers).
MATH_MODES = ("default", "fast")


def mode_error(noise_rng: str, dtype: str, math_mode: str, backend: str = "numba") -> str | None:
    """Why this combination of the kernels' modes is not allowed (a message naming the field,
    the value and what is allowed), or None when it is. The one rule that :func:`kernel_tag`,
    ``simulate``'s plan and ``SweepSpec`` apply (each raises its own error type with it)."""
    if noise_rng not in NOISE_RNGS:
        return f"noise_rng {noise_rng!r} unknown; allowed: {', '.join(NOISE_RNGS)}"
    if dtype not in DTYPES:
        return f"dtype {dtype!r} unknown; allowed: {', '.join(DTYPES)}"
    if dtype == "float32" and backend != "numba":
        return "dtype='float32' needs backend='numba' (the batch kernel)"
    if math_mode not in MATH_MODES:
        return f"math_mode {math_mode!r} unknown; allowed: {', '.join(MATH_MODES)}"
    if math_mode == "fast" and (noise_rng != "counter" or dtype != "float64" or backend != "numba"):
        return ("math_mode='fast' needs noise_rng='counter', dtype='float64' and backend='numba' "
                f"(got noise_rng={noise_rng!r}, dtype={dtype!r}, backend={backend!r})")
    return None


class KernelArgs(NamedTuple):
    """Everything one :func:`integrate` call reads and writes, besides the model and method.

    Attributes
    ----------
    x : (batch, region, state) float64
        State, updated in place.
    hist : (batch, cvar, region, 2 * slots) float64
        Ring buffer of the transmitted rates; the rates of step ``t`` sit at ``t % slots`` and
        again at that plus ``slots``, so that a delayed read never wraps. ``slots`` is the
        longest delay + 2 (the next slot is written while the current step still reads). The
        slot of ``t0`` must hold ``cvar`` of ``x`` with the membrane drive of step ``t0``: the
        model's ``dfun`` receives those rates instead of recomputing them.
    t0 : int
        Global index of the first step of this chunk.
    params : (batch, region, n_params) float64
        Model parameters in the model's ``PARAMS`` order.
    coupling : (batch, region) float64
        Global coupling K (per member and target region).
    indptr, weights : CSR rows and values of the non-zero weights (row = target).
    offsets : (batch, nnz) int64
        Per edge ``source * 2 * slots + slots − delay_steps``: the flat history index of the
        edge's delayed rate is ``offset + t % slots`` (see :func:`edge_offsets`).
    noise : (stream, n_steps, region, n_noise) float64
        Standard normal increments; member ``b`` reads stream ``stream[b]`` (not read when
        the kernel's tag selects the counter generator).
    stream : (batch,) int64
    keys : (batch,) int64
        Each member's seed: the key of the counter generator (``noise_rng="counter"``).
    noise_idx : (n_noise,) int64
        State index receiving each noise component.
    drv_space : (drive, batch, region); drv_wave : (drive, n_steps + 1); drv_target : (drive,)
        Separable drives; target 0 = membrane (mV), 1 = rate (1/s).
    dt : float
        Step in seconds.
    n_steps, decim : int
        Steps to take; steps per recorded sample (``n_steps`` is a multiple of ``decim``).
    rec : (n_rec,) int64
        Recorded quantities: ``< n_out`` an output of ``observe``, else state ``rec - n_out``.
    n_out : int
        Number of model outputs.
    out : (n_rec, batch, n_steps // decim, region) float64 or a (0, 0, 0, 0) array (no record)
        Averages over each sample's ``decim`` steps.
    diverged : (batch,) bool
        Set when a member's state becomes non-finite or exceeds ``bound``; that member stops
        and its remaining samples are NaN.
    bound : float
    """

    x: np.ndarray
    hist: np.ndarray
    t0: int
    params: np.ndarray
    coupling: np.ndarray
    indptr: np.ndarray
    weights: np.ndarray
    offsets: np.ndarray
    noise: np.ndarray
    stream: np.ndarray
    keys: np.ndarray
    noise_idx: np.ndarray
    drv_space: np.ndarray
    drv_wave: np.ndarray
    drv_target: np.ndarray
    dt: float
    n_steps: int
    decim: int
    rec: np.ndarray
    n_out: int
    out: np.ndarray
    diverged: np.ndarray
    bound: float

_ENTRY_POINTS: dict = {}


@lru_cache(maxsize=None)
def model_tag(name: str) -> str:
    """``"<name>:<hash of the model sources and this kernel>"``, the compile-time model key."""
    h = hashlib.sha1()
    for path in (Path(__file__), Path(inspect.getfile(MODELS[name]))):
        h.update(path.read_bytes())
    return f"{name}:{h.hexdigest()[:12]}"


def kernel_tag(name: str, noise_rng: str = "numpy", dtype: str = "float64", math_mode: str = "default") -> str:
    """The kernels' compile-time key: :func:`model_tag`, plus ``":counter"`` for the counter
    noise generator (in-kernel Philox noise and the vectorisable :func:`exp` in the models'
    equations, see :func:`model_function`), ``":float32"`` for single precision (batch
    kernel only: the models' equations with float32 constants and :func:`exp32`) and ``":fast"``
    for ``math_mode="fast"`` (:func:`exp_fast`; counter generator and float64 only)."""
    msg = mode_error(noise_rng, dtype, math_mode)
    if msg:
        raise ValueError(msg)
    return (model_tag(name) + ("" if noise_rng == "numpy" else ":" + noise_rng)
            + ("" if dtype == "float64" else ":" + dtype) + ("" if math_mode == "default" else ":" + math_mode))


def _tag_modes(tag: str) -> tuple:
    return tuple(tag.split(":")[2:])


#: ``math`` with the vectorisable :func:`exp`: what the models' numba functions see in the
#: counter mode (numba resolves ``math.<name>`` through the module object a function's globals
#: hold, so a function compiled with this module in place of ``math`` calls :func:`exp`)
_VECTOR_MATH = ModuleType("neurotwin_dash.models._vector_math")
_VECTOR_MATH.__dict__.update({k: v for k, v in vars(math).items() if not k.startswith("__")})

_VECTOR_MATH32 = ModuleType("neurotwin_dash.models._vector_math32")
_VECTOR_MATH32.__dict__.update({k: v for k, v in vars(_VECTOR_MATH).items() if not k.startswith("__")})

_VECTOR_MATH_FAST = ModuleType("neurotwin_dash.models._vector_math_fast")
_VECTOR_MATH_FAST.__dict__.update({k: v for k, v in vars(_VECTOR_MATH).items() if not k.startswith("__")})

_RELINKED: dict = {}



def _relinked(disp, single=False, fast=False):
    """A copy of the numba function ``disp`` whose globals see :data:`_VECTOR_MATH` instead of
    ``math`` and relinked copies of the numba functions it calls (its equations unchanged).
    With ``single``: float32 throughout instead (:data:`_VECTOR_MATH32`, and every float literal
    and float global of the code as ``numpy.float32``: numba types a Python float as float64,
    which would turn the model's float32 arithmetic back into float64). With ``fast``:
    :data:`_VECTOR_MATH_FAST` (:func:`exp_fast`) instead."""
    done = _RELINKED.get((disp, single, fast))
    if done is not None:
        return done
    py = disp.py_func
    glob = dict(py.__globals__)
    for name in py.__code__.co_names:
        value = glob.get(name)
        if value is math:
            glob[name] = _VECTOR_MATH32 if single else (_VECTOR_MATH_FAST if fast else _VECTOR_MATH)
        elif isinstance(value, Dispatcher) and value is not exp and value is not exp_fast:
            glob[name] = _relinked(value, single, fast)
        elif single and type(value) is float:
            glob[name] = np.float32(value)
    code = py.__code__
    if single:
        code = code.replace(co_consts=tuple(np.float32(c) if type(c) is float else c for c in code.co_consts))
    clone = FunctionType(code, glob, py.__name__, py.__defaults__, py.__closure__)
    clone.__qualname__ = py.__qualname__
    # never from numba's cache: the cache is keyed by the source file and name, shared with
    # the original (the kernels that inline the copy are cached under their own tags)
    opts = {k: v for k, v in disp.targetoptions.items() if k not in ("cache", "nopython")}
    _RELINKED[(disp, single, fast)] = done = njit(**opts)(clone)
    return done


def model_function(tag: str, attr: str):
    """The numba function ``attr`` (``dfun``, ``cvar``, ``observe``, ``noise_gain``) of the model
    of kernel tag ``tag``: the model's own, or in the counter mode its relinked copy, whose
    ``math.exp`` (also inside :func:`sigmoid`) is the vectorisable :func:`exp` (relative
    difference to libm ≤ 1e-15, tested); with ``math_mode="fast"`` :func:`exp_fast` (≤ 2e-14)."""
    f = getattr(MODELS[tag.split(":")[0]], attr)
    modes = _tag_modes(tag)
    if "float32" in modes:
        return _relinked(f, single=True)
    if "fast" in modes:
        return _relinked(f, fast=True)
    return _relinked(f) if "counter" in modes else f


def counter_mode(tag):  # pragma: no cover - replaced by the overload
    """In numba code: whether the kernel tag ``tag`` (a string literal) selects the counter
    generator, as a compile-time constant."""
    raise NotImplementedError


@overload(counter_mode, inline="always")
def _ov_counter_mode(tag):
    """Whether ``tag`` selects the counter generator: a constant, so LLVM drops the other branch."""
    if not isinstance(tag, types.StringLiteral):
        return None
    if "counter" in _tag_modes(tag.literal_value):
        return lambda tag: True
    return lambda tag: False


def edge_offsets(indices, delays, n_slot):
    """Flat history offsets of the edges (see :func:`integrate`), shape of ``delays``."""
    return np.ascontiguousarray(indices[None, :] * (2 * n_slot) + n_slot - delays, dtype=np.int64)


def compiled_integrate(tag: str, heun: bool, args: KernelArgs):
    """The machine-code entry point of :func:`integrate` for ``tag``, ``heun`` and the types of
    ``args``; call it as ``entry(tag, heun, b_start, b_stop, args)``.

    Calling the dispatcher with a plain ``str`` would retype the call every time (numba first
    tries ``unicode_type`` and only then the literal); compiling once for the literal signature
    (from the on-disk cache when present) and keeping the entry point makes each chunk call cost
    microseconds.
    """
    # the model tag and the integration method are compile-time constants
    sig = (types.literal(tag), types.literal(bool(heun)), types.int64, types.int64, typeof(args))
    ep = _ENTRY_POINTS.get(sig)
    if ep is None:
        integrate.compile(sig)
        ep = _ENTRY_POINTS[sig] = integrate.overloads[sig].entry_point
    return ep


def _bitcast(src, dst):
    """A numba intrinsic reinterpreting the bits of a ``src`` value as a ``dst`` value of the same
    width (a plain LLVM bit cast, which vectorises; NumPy's ``view`` for scalars)."""
    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))
        return dst(src), codegen
    return cast


#: the float64 whose bit pattern is an int64, and back; the float32 whose bit pattern is an int32
_bits_as_float = _bitcast(types.int64, types.float64)
_float_as_bits = _bitcast(types.float64, types.int64)
_bits_as_float32 = _bitcast(types.int32, types.float32)


# exp(x) = 2**n · exp(f), n = round(x / ln 2), f = x − n ln 2 in [−ln2/2, ln2/2] (ln 2 split in a
# high part exact in 32 bits and a low part, Cody–Waite), exp(f) by its Taylor polynomial of
# degree 12 (truncation error f**13/13! < 2e-17 relative)
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125
_LN2_LO = 1.42860682030941723212e-06
_EXP_COEF = tuple(1.0 / math.factorial(k) for k in range(13))
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12 = _EXP_COEF


# not inlined at numba's IR level (its conditional expressions trip numba's IR checks when
# inlined there); LLVM inlines it (forceinline: LLVM's alwaysinline)
@njit(cache=True, error_model="numpy", forceinline=True)
def exp(x):
    """``e**x`` in float64 from +, ×, a rounding and a bit cast, so that a loop over batch members
    can vectorise (numba's ``math.exp`` is a libm call per element: LLVM here has no vector math
    library). Kept and tested for kernels that want it; :func:`sigmoid` uses libm (see there). Relative error ≤ 1e-15 against ``math.exp`` over the normal range (tested); 0 below
    −745.2, ``inf`` above 709.78, NaN for NaN.
    """
    y = x if x > -745.2 else -745.2           # NaN compares false: it reaches the last line
    y = y if y < 709.79 else 709.79
    n = math.floor(y * _LOG2E + 0.5)
    f = (y - n * _LN2_HI) - n * _LN2_LO
    # Estrin's scheme: four levels of independent products instead of Horner's chain of twelve
    # (the single-run kernel is latency-bound on this chain; the lanes of the batch kernel are not)
    f2 = f * f
    f4 = f2 * f2
    s0 = ((_C0 + _C1 * f) + (_C2 + _C3 * f) * f2) + ((_C4 + _C5 * f) + (_C6 + _C7 * f) * f2) * f4
    s1 = ((_C8 + _C9 * f) + (_C10 + _C11 * f) * f2) + _C12 * f4
    p = s0 + s1 * (f4 * f4)
    # 2**n as two factors, so that n down to −1075 (subnormal results) stays representable
    k = np.int64(n)
    h = k >> 1
    p = p * _bits_as_float((h + 1023) << 52) * _bits_as_float((k - h + 1023) << 52)
    p = p if x < 709.79 else math.inf
    p = p if x > -745.2 else 0.0
    return p if x == x else x


_VECTOR_MATH.exp = exp

# math_mode="fast": exp(f) on [−ln2/2, ln2/2] by the Chebyshev interpolant of degree 9 in the power
# basis (numpy.polynomial.Chebyshev.interpolate(np.exp, 9) on that interval; ≤ 1.9e-14 relative,
# checked in 40-digit arithmetic), the argument clamped to [−707, 709] so that one factor 2**n
# is a normal float (no ±inf, 0 or subnormal results: the sigmoids that use it stay within 1e-307
# of their limits), NaN passed through by the clamps
_FAST_COEF = (1.000000000000014, 1.0000000000000104, 0.4999999999942022, 0.16666666666506605,
              0.041666667049288564, 0.008333333403076093, 0.0013888800476772423, 0.00019841147895541348,
              2.4885022797049953e-05, 2.7649405975853787e-06)
_D0, _D1, _D2, _D3, _D4, _D5, _D6, _D7, _D8, _D9 = _FAST_COEF


@njit(cache=True, error_model="numpy", forceinline=True)
def exp_fast(x):
    """``e**x`` for ``math_mode="fast"``: as :func:`exp` with a polynomial of degree 9 instead of
    12 and no special values: relative error ≤ 2e-14 against ``math.exp`` on [−707, 709]
    (tested); the argument is clamped to that range (``exp_fast(-1000) = e**−707``,
    ``exp_fast(1000) = e**709``); NaN gives NaN."""
    y = -707.0 if x < -707.0 else x          # NaN compares false: it passes both clamps
    y = 709.0 if y > 709.0 else y
    n = math.floor(y * _LOG2E + 0.5)
    f = (y - n * _LN2_HI) - n * _LN2_LO
    f2 = f * f
    f4 = f2 * f2
    s0 = ((_D0 + _D1 * f) + (_D2 + _D3 * f) * f2) + ((_D4 + _D5 * f) + (_D6 + _D7 * f) * f2) * f4
    p = s0 + (_D8 + _D9 * f) * (f4 * f4)
    return p * _bits_as_float((np.int64(n) + 1023) << 52)


_VECTOR_MATH_FAST.exp = exp_fast


_F32 = np.float32
_LOG2E32 = _F32(_LOG2E)
_LN2_HI32 = _F32(0.693359375)          # exact in 9 bits; the low part corrects it
_LN2_LO32 = _F32(-2.12194440e-4)
_X0, _X1, _X2, _X3, _X4, _X5, _X6, _X7 = (_F32(1.0 / math.factorial(k)) for k in range(8))
_LOW32 = _F32(-87.33)                  # exp(-87.33) ~ 1.2e-38, the smallest normal float32
_HIGH32 = _F32(88.72)
_HALF32 = _F32(0.5)


@njit(cache=True, error_model="numpy", forceinline=True)
def exp32(x):
    """``e**x`` in float32 for float32 ``x`` (the models' exponentials with ``dtype="float32"``):
    range reduction by ln 2 and the Taylor polynomial of degree 7, vectorisable like :func:`exp`.
    Relative error ≤ 3e-7 (2–3 float32 ulp) against float64 ``exp`` (tested); 0 below −87.33
    (flushes what would be subnormal), ``inf`` above 88.72, NaN for NaN."""
    y = x if x > _LOW32 else _LOW32
    y = y if y < _HIGH32 else _HIGH32
    n = math.floor(y * _LOG2E32 + _HALF32)
    nf = _F32(n)
    f = (y - nf * _LN2_HI32) - nf * _LN2_LO32
    f2 = f * f
    p = ((_X0 + _X1 * f) + (_X2 + _X3 * f) * f2) + ((_X4 + _X5 * f) + (_X6 + _X7 * f) * f2) * (f2 * f2)
    p = p * _bits_as_float32(np.int32((np.int32(n) + 127) << 23))
    p = p if x < _HIGH32 else _F32(np.inf)
    p = p if x > _LOW32 else _F32(0.0)
    return p if x == x else x


_VECTOR_MATH32.exp = exp32


# --- counter-based noise (``noise_rng="counter"``) ------------------------------------------
# Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
# bijection of a 128-bit counter under a 64-bit key, so the normal increment of (member seed,
# step, region, component) is a pure function of those numbers. Both kernels call the same
# function (the batch kernel for a vector of lanes at once), so they draw the same numbers, and
# no generator state has to be kept, drawn ahead or passed around. 32-bit words are held in
# int64 (products of two words wrap modulo 2**64; masks restore the high and low words), which
# LLVM turns into packed 32x32->64-bit multiplies.
_PHILOX_M0 = 0xD2511F53
_PHILOX_M1 = 0xCD9E8D57
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
#: fourth counter word of the noise increments: a domain tag, so that other uses of the same
#: generator (with another tag) never meet these counters
NOISE_DOMAIN = 0x6E6F6973


@njit(cache=True, error_model="numpy", forceinline=True)
def _philox_round(c0, c1, c2, c3, k0, k1):
    p0 = _PHILOX_M0 * c0
    p1 = _PHILOX_M1 * c2
    return (((p1 >> 32) & _MASK32) ^ c1 ^ k0, p1 & _MASK32,
            ((p0 >> 32) & _MASK32) ^ c3 ^ k1, p0 & _MASK32)


@njit(cache=True, error_model="numpy", forceinline=True)
def _philox_bump(k0, k1):
    return (k0 + _PHILOX_W0) & _MASK32, (k1 + _PHILOX_W1) & _MASK32


@njit(cache=True, error_model="numpy", forceinline=True)
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of the counter ``(c0, c1, c2, c3)`` under the key ``(k0, k1)``: four 32-bit
    words (each argument and result an int in [0, 2**32)). Checked against Random123's
    known-answer vectors (tests). The ten rounds are written out, so that a loop over lanes
    around a call has no inner loop and vectorises."""
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _philox_bump(k0, k1)
    return _philox_round(c0, c1, c2, c3, k0, k1)


_LN2 = 0.6931471805599453
_SQRT2 = 1.4142135623730951
# 2 atanh(s) = log((1 + s) / (1 - s)) = 2 (s + s**3/3 + ... ): with |s| <= 3 - 2 sqrt(2) the
# terms up to s**21 leave < 1e-17 relative
_LOG_COEF = tuple(2.0 / (2 * k + 1) for k in range(11))
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8, _L9, _L10 = _LOG_COEF
# sin and cos on [-pi/4, pi/4] by their Taylor polynomials (truncation < 5e-17)
_S1, _S3, _S5, _S7, _S9, _S11, _S13, _S15 = ((-1) ** k / math.factorial(2 * k + 1) for k in range(8))
_K0, _K2, _K4, _K6, _K8, _K10, _K12, _K14, _K16 = ((-1) ** k / math.factorial(2 * k) for k in range(9))


@njit(cache=True, error_model="numpy", forceinline=True)
def log_unit(u):
    """Natural log of ``u`` in (0, 1] (normal numbers) from +, ×, ÷ and bit casts: vectorises.
    Relative error ≤ 1e-15 against ``math.log`` (tested)."""
    bits = _float_as_bits(u)
    e = (bits >> 52) - 1023
    m = _bits_as_float((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)   # u = m 2**e, m in [1, 2)
    big = m > _SQRT2
    m = 0.5 * m if big else m                                             # m in [0.71, 1.42)
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    q = _L0 + z * (_L1 + z * (_L2 + z * (_L3 + z * (_L4 + z * (_L5 + z * (_L6 + z * (
        _L7 + z * (_L8 + z * (_L9 + z * _L10)))))))))
    return e * _LN2 + s * q


@njit(cache=True, error_model="numpy", forceinline=True)
def cos_sin_turn(u):
    """``(cos 2πu, sin 2πu)`` for ``u`` in [0, 1): the quarter turn nearest to ``4u`` by selects,
    the rest by Taylor polynomials on [−π/4, π/4]. Absolute error ≤ 1e-15 (tested)."""
    t = 4.0 * u
    q = math.floor(t + 0.5)
    f = (t - q) * (0.5 * math.pi)      # t - q is exact
    f2 = f * f
    s = f * (_S1 + f2 * (_S3 + f2 * (_S5 + f2 * (_S7 + f2 * (_S9 + f2 * (_S11 + f2 * (_S13 + f2 * _S15)))))))
    c = _K0 + f2 * (_K2 + f2 * (_K4 + f2 * (_K6 + f2 * (_K8 + f2 * (_K10 + f2 * (_K12 + f2 * (
        _K14 + f2 * _K16)))))))
    # quarter turn k: (cos, sin) = (c, s), (−s, c), (−c, −s), (s, −c); one select each and sign
    # flips on the bits (nested selects keep LLVM from vectorising the loop around)
    k = np.int64(q)
    odd = (k & 1) == 1
    a = s if odd else c
    b = c if odd else s
    cs = _bits_as_float(_float_as_bits(a) ^ ((((k + 1) >> 1) & 1) << 63))
    sn = _bits_as_float(_float_as_bits(b) ^ (((k >> 1) & 1) << 63))
    return cs, sn


@njit(cache=True, error_model="numpy", forceinline=True)
def counter_normals(seed, t, j):
    """Two independent standard normal numbers for member ``seed`` (an int in [0, 2**63)), step
    ``t`` and pair ``j``: Philox4x32-10 of the counter ``(t, t >> 32, j, NOISE_DOMAIN)`` under
    the key ``(seed mod 2**32, seed >> 32)`` gives two 53-bit uniforms, Box–Muller turns them
    into normals. Pair ``j`` of a step feeds the increments ``2j`` and ``2j + 1`` of the
    (region, noise component) array flattened in C order."""
    w0, w1, w2, w3 = philox4x32(t & _MASK32, (t >> 32) & _MASK32, j & _MASK32, NOISE_DOMAIN,
                                seed & _MASK32, (seed >> 32) & _MASK32)
    u1 = (((w0 << 21) | (w1 >> 11)) + 0.5) * 1.1102230246251565e-16   # (0, 1): 2**-53
    u2 = ((w2 << 21) | (w3 >> 11)) * 1.1102230246251565e-16           # [0, 1)
    r = math.sqrt(-2.0 * log_unit(u1))
    c, s = cos_sin_turn(u2)
    return r * c, r * s


def counter_noise(seed: int, t0: int, n_steps: int, n_region: int, n_noise: int) -> np.ndarray:
    """The increments the kernels draw with ``noise_rng="counter"`` for one member, steps
    ``t0 .. t0 + n_steps − 1``, as (n_steps, region, n_noise) (for tests and checks)."""
    n = n_region * n_noise
    out = np.empty((n_steps, n + (n % 2)))
    _fill_counter_noise(out, seed, t0)
    return out[:, :n].reshape(n_steps, n_region, n_noise)


@njit(cache=True, error_model="numpy")
def _fill_counter_noise(out, seed, t0):
    for s in range(out.shape[0]):
        for j in range(out.shape[1] // 2):
            z0, z1 = counter_normals(seed, t0 + s, j)
            out[s, 2 * j] = z0
            out[s, 2 * j + 1] = z1


@njit(cache=True, inline="always")
def sigmoid(v, e0, r, v0):
    """The wave-to-pulse sigmoid of the Jansen–Rit family, ``2 e0 / (1 + exp(r (v0 − v)))`` (s⁻¹).

    Shared by the models' numba functions; it lives here because the model tag hashes this file
    (a change to it recompiles every model). It uses libm's ``math.exp``: measured on tvb76 (2 CPUs,
    load 1), the polynomial :func:`exp` made single runs 0.044 -> 0.055 s per simulated s (with
    Estrin's scheme; 0.061 with Horner's) and gained the batch kernel only 0.021 -> 0.018, so the
    single run, which every dashboard change waits for, keeps libm."""
    return 2.0 * e0 / (1.0 + math.exp(r * (v0 - v)))


def _model_function(tag, attr):
    return model_function(tag.literal_value, attr)


def _dfun(tag, x, p, rates, c_in, u_mem, u_rate):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


def _cvar(tag, x, p, u_mem):  # pragma: no cover
    raise NotImplementedError


def _observe(tag, x, p, rates, u_mem):  # pragma: no cover
    raise NotImplementedError


def _noise_gain(tag, p):  # pragma: no cover
    raise NotImplementedError


@overload(_dfun, inline="always")
def _ov_dfun(tag, x, p, rates, c_in, u_mem, u_rate):
    if not isinstance(tag, types.StringLiteral):
        return None
    f = _model_function(tag, "dfun")

    def impl(tag, x, p, rates, c_in, u_mem, u_rate):
        return f(x, p, rates, c_in, u_mem, u_rate)
    return impl


@overload(_cvar, inline="always")
def _ov_cvar(tag, x, p, u_mem):
    if not isinstance(tag, types.StringLiteral):
        return None
    f = _model_function(tag, "cvar")

    def impl(tag, x, p, u_mem):
        return f(x, p, u_mem)
    return impl


@overload(_observe, inline="always")
def _ov_observe(tag, x, p, rates, u_mem):
    if not isinstance(tag, types.StringLiteral):
        return None
    f = _model_function(tag, "observe")

    def impl(tag, x, p, rates, u_mem):
        return f(x, p, rates, u_mem)
    return impl


@overload(_noise_gain, inline="always")
def _ov_noise_gain(tag, p):
    if not isinstance(tag, types.StringLiteral):
        return None
    f = _model_function(tag, "noise_gain")

    def impl(tag, p):
        return f(p)
    return impl


def _step(dst, x, f, g, h, mean):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(_step, inline="always")
def _ov_step(dst, x, f, g, h, mean):
    """``dst[k] = x[k] + h * f[k]`` (Euler) or ``x[k] + h * (0.5 * (f[k] + g[k]))`` (Heun) for
    each element of the slope tuples ``f``/``g``, unrolled with constant indices: the slopes stay
    in registers (staging them through an array made the next vector load wait for the scalar
    stores, the kernel's hottest instruction)."""
    if not isinstance(mean, types.BooleanLiteral):
        return None
    if mean.literal_value:
        body = "".join(f"    dst[{k}] = x[{k}] + h * (0.5 * (f[{k}] + g[{k}]))\n" for k in range(len(f)))
    else:
        body = "".join(f"    dst[{k}] = x[{k}] + h * f[{k}]\n" for k in range(len(f)))
    ns = {}
    exec(f"def impl(dst, x, f, g, h, mean):\n{body or '    pass'}\n", ns)
    return ns["impl"]


@njit(cache=True, nogil=True)
def _advance_member(tag, heun, b, args):
    """Advance batch member ``b`` (see :func:`integrate` and :class:`KernelArgs`)."""
    literally(tag)  # compile per model; ``tag`` is a string literal from here on
    literally(heun)  # and per method: the Euler kernel carries no Heun code
    x, hist, t0, params, coupling = args.x, args.hist, args.t0, args.params, args.coupling
    indptr, weights, offsets = args.indptr, args.weights, args.offsets
    noise, stream, noise_idx = args.noise, args.stream, args.noise_idx
    drv_space, drv_wave, drv_target = args.drv_space, args.drv_wave, args.drv_target
    dt, n_steps, decim, rec, n_out = args.dt, args.n_steps, args.decim, args.rec, args.n_out
    out, diverged, bound = args.out, args.diverged, args.bound
    counter = counter_mode(tag)
    key = args.keys[b]
    n_batch, n_region, n_state = x.shape
    n_cvar = hist.shape[1]
    n_slot = hist.shape[3] // 2
    n_flat = n_region * 2 * n_slot
    n_noise = noise_idx.shape[0]
    n_drive = drv_target.shape[0]
    n_rec = rec.shape[0]
    record = out.shape[0] > 0
    if diverged[b]:
        if record:
            out[:, b, :, :] = np.nan
        return
    need_obs = False
    for q in range(n_rec):
        if rec[q] < n_out:
            need_obs = True
    sqdt = math.sqrt(dt)
    xb = x[b]
    pb = params[b]
    eoff = offsets[b]
    hflat = hist[b].reshape(n_cvar, n_flat)
    nz = noise[stream[b]]
    # counter generator: this step's increments, (region, noise) flattened, drawn in pairs
    n_pair = (n_region * n_noise + 1) // 2
    zs = np.zeros(2 * n_pair)
    gains = np.empty((n_region, n_noise))
    for i in range(n_region):
        m = 0
        for g in _noise_gain(tag, pb[i]):
            gains[i, m] = g * sqdt
            m += 1
    cin = np.zeros(n_cvar)
    rs = np.empty(n_cvar)     # the region's own transmitted rates of the state being advanced
    xt = np.empty(n_state)
    obs = np.zeros(n_out)
    um = np.zeros(n_region)   # drives at step s ...
    ur = np.zeros(n_region)
    um1 = np.zeros(n_region)  # ... and at step s + 1
    ur1 = np.zeros(n_region)
    if n_drive > 0:
        for d in range(n_drive):
            for i in range(n_region):
                if drv_target[d] == 0:
                    um1[i] += drv_space[d, b, i] * drv_wave[d, 0]
                else:
                    ur1[i] += drv_space[d, b, i] * drv_wave[d, 0]
    acc = np.zeros((n_rec, n_region))
    for s in range(n_steps):
        slot = (t0 + s) % n_slot          # holds the rates of this step's state
        nslot = (t0 + s + 1) % n_slot     # receives the rates of the next state
        if counter:
            for j in range(n_pair):
                z0, z1 = counter_normals(key, t0 + s, j)
                zs[2 * j] = z0
                zs[2 * j + 1] = z1
        if n_drive > 0:
            for i in range(n_region):
                um[i] = um1[i]
                ur[i] = ur1[i]
                um1[i] = 0.0
                ur1[i] = 0.0
            for d in range(n_drive):
                w = drv_wave[d, s + 1]
                if drv_target[d] == 0:
                    for i in range(n_region):
                        um1[i] += drv_space[d, b, i] * w
                else:
                    for i in range(n_region):
                        ur1[i] += drv_space[d, b, i] * w
        for i in range(n_region):
            # delayed network input; offsets already hold source * 2 * slots + slots - delay
            k = coupling[b, i]
            e0 = indptr[i]
            e1 = indptr[i + 1]
            for c in range(n_cvar):
                hc = hflat[c]
                # four partial sums: independent add chains instead of one serial chain
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                a3 = 0.0
                e = e0
                while e + 4 <= e1:
                    a0 += weights[e] * hc[eoff[e] + slot]
                    a1 += weights[e + 1] * hc[eoff[e + 1] + slot]
                    a2 += weights[e + 2] * hc[eoff[e + 2] + slot]
                    a3 += weights[e + 3] * hc[eoff[e + 3] + slot]
                    e += 4
                while e < e1:
                    a0 += weights[e] * hc[eoff[e] + slot]
                    e += 1
                cin[c] = k * ((a0 + a1) + (a2 + a3))
            xi = xb[i]
            # the rates of this state were written to this step's slot by the previous step (or
            # by the caller before step 0): models read them instead of recomputing the sigmoid
            for c in range(n_cvar):
                rs[c] = hflat[c, i * 2 * n_slot + slot]
            f = _dfun(tag, xi, pb[i], rs, cin, um[i], ur[i])
            if heun:
                # predictor with the same noise increment, then the mean slope (network input
                # held over the step, drives of step s + 1)
                _step(xt, xi, f, f, dt, False)
                for m in range(n_noise):
                    xt[noise_idx[m]] += gains[i, m] * (zs[i * n_noise + m] if counter else nz[s, i, m])
                j = 0
                for v in _cvar(tag, xt, pb[i], um1[i]):
                    rs[j] = v
                    j += 1
                _step(xi, xi, f, _dfun(tag, xt, pb[i], rs, cin, um1[i], ur1[i]), dt, True)
            else:
                _step(xi, xi, f, f, dt, False)
            for m in range(n_noise):
                xi[noise_idx[m]] += gains[i, m] * (zs[i * n_noise + m] if counter else nz[s, i, m])
            # rates of the new state; the slot they overwrite is one no edge reads this step
            c = 0
            for v in _cvar(tag, xi, pb[i], um1[i]):
                hflat[c, i * 2 * n_slot + nslot] = v
                hflat[c, i * 2 * n_slot + nslot + n_slot] = v
                rs[c] = v
                c += 1
            if record:
                if need_obs:
                    j = 0
                    for v in _observe(tag, xi, pb[i], rs, um1[i]):
                        obs[j] = v
                        j += 1
                for q in range(n_rec):
                    r = rec[q]
                    acc[q, i] += obs[r] if r < n_out else xi[r - n_out]
        if (s + 1) % decim == 0:
            bad = False
            for i in range(n_region):
                for j in range(n_state):
                    if not (abs(xb[i, j]) <= bound):  # also catches NaN
                        bad = True
            if record:
                n = (s + 1) // decim - 1
                for q in range(n_rec):
                    for i in range(n_region):
                        out[q, b, n, i] = np.nan if bad else acc[q, i] / decim
                        acc[q, i] = 0.0
            if bad:
                diverged[b] = True
                if record:
                    out[:, b, (s + 1) // decim:, :] = np.nan
                return


@njit(cache=True, nogil=True)
def integrate(tag, heun, b_start, b_stop, args):
    """Advance batch members ``b_start..b_stop-1`` by ``args.n_steps`` steps of ``args.dt``
    seconds (in place; the arrays are described in :class:`KernelArgs`).

    The GIL is released, so threads may advance disjoint member ranges of the same arrays at once.

    Per step and region: the delayed network input is summed over the region's non-zero
    weights from the history, the state is advanced (Euler–Maruyama, or Heun with the same
    noise increment in both stages and the network input held over the step), and the rates of
    the new state are written to the next history slot.

    Parameters
    ----------
    tag : str literal
        Model key from :func:`model_tag`.
    heun : bool literal
        Stochastic Heun instead of Euler–Maruyama; a compile-time constant (each method has its
        own machine code, so the Euler kernel carries none of Heun's).
    b_start, b_stop : int
        Range of batch members to advance.
    args : KernelArgs
    """
    literally(tag)
    literally(heun)
    for b in range(b_start, b_stop):
        _advance_member(tag, heun, b, args)


def drives_at(drv_space, drv_wave, drv_target, s):
    """Membrane (mV) and rate (1/s) drives of step ``s``, each (batch, region): the separable
    drives summed in order, as the kernel sums them."""
    um = np.zeros(drv_space.shape[1:])
    ur = np.zeros(drv_space.shape[1:])
    for d in range(len(drv_target)):
        if drv_target[d] == 0:
            um += drv_space[d] * drv_wave[d, s]
        else:
            ur += drv_space[d] * drv_wave[d, s]
    return um, ur


def integrate_numpy(model, heun: bool, args: KernelArgs, W, D):
    """Slow, obvious NumPy reference of :func:`integrate`: the same arguments, but a dense
    ``W`` (region, region) and per-member delay matrices ``D`` (batch, region, region) in steps
    instead of the CSR arrays and offsets of ``args`` (not read), and all members and regions
    advanced together."""
    x, hist, t0, params, coupling = args.x, args.hist, args.t0, args.params, args.coupling
    noise, stream, noise_idx = args.noise, args.stream, args.noise_idx
    drv_space, drv_wave, drv_target = args.drv_space, args.drv_wave, args.drv_target
    dt, n_steps, decim, rec = args.dt, args.n_steps, args.decim, args.rec
    out, diverged, bound = args.out, args.diverged, args.bound
    n_batch, n_region, n_state = x.shape
    n_slot = hist.shape[3] // 2
    ring = hist[..., :n_slot]                                  # the first copy is enough here
    bidx = np.arange(n_batch)[:, None, None]
    src = np.arange(n_region)[None, None, :]
    gains = model.noise_gain_numpy(params)                     # (batch, region, n_noise)
    xi = noise[stream]                                         # (batch, steps, region, n_noise)
    record = out.shape[0] > 0
    acc = np.zeros((len(rec), n_batch, n_region))
    alive = ~diverged.copy()
    if record:
        out[:, diverged] = np.nan

    for s in range(n_steps):
        slot = (t0 + s) % n_slot
        um, ur = drives_at(drv_space, drv_wave, drv_target, s)
        um1, ur1 = drives_at(drv_space, drv_wave, drv_target, s + 1)
        c_in = np.empty((n_batch, n_region, hist.shape[1]))
        for c in range(hist.shape[1]):
            delayed = ring[:, c][bidx, src, (slot - D) % n_slot]   # (batch, target, source)
            c_in[..., c] = coupling * np.sum(W[None] * delayed, axis=-1)
        kick = np.zeros_like(x)
        kick[..., noise_idx] = gains * np.sqrt(dt) * xi[:, s]
        f1 = model.dfun_numpy(x, params, c_in, um, ur)
        if heun:
            f2 = model.dfun_numpy(x + dt * f1 + kick, params, c_in, um1, ur1)
            new = x + dt * 0.5 * (f1 + f2) + kick
        else:
            new = x + dt * f1 + kick
        x[alive] = new[alive]
        rates = np.moveaxis(model.cvar_numpy(x, params, um1), -1, 1)
        nslot = (t0 + s + 1) % n_slot
        hist[alive, :, :, nslot] = rates[alive]
        hist[alive, :, :, nslot + n_slot] = rates[alive]
        if record:
            allq = np.concatenate([model.observe_numpy(x, params, um1), x], axis=-1)
            acc += np.moveaxis(allq[..., rec], -1, 0)
        if (s + 1) % decim == 0:
            bad = alive & ~np.all(np.abs(x) <= bound, axis=(1, 2))
            if record:
                n = (s + 1) // decim - 1
                out[:, :, n, :] = acc / decim
                out[:, ~alive | bad, n, :] = np.nan
                acc[:] = 0.0
            alive &= ~bad
            diverged |= bad
