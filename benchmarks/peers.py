"""Peer long-range electrostatics libraries, run on the same inputs as jaxlr.

This module drives the two peer libraries

* **jax-pme** (``import jaxpme``; calculators ``Ewald``, ``PME``, ``P3M``), and
* **torch-pme** (``import torchpme``; ``EwaldCalculator``, ``PMECalculator``,
  ``P3MCalculator`` with a ``CoulombPotential``),

so that a benchmark can compare their timings with jaxlr's *at matched measured
accuracy*.  Everything is expressed in eV, Å and elementary charges with the Coulomb
constant :data:`COULOMB_K` (eV·Å/e²), passed to both libraries as their ``prefactor``.

Both peers return per-atom *potentials* that already contain the factor ½ of the
pair double counting, ``V_i = ½ Σ_j q_j v(r_ij)``, so the total energy is
``E = Σ_i q_i V_i`` (jax-pme's ``Calculator.energy`` does exactly this; for torch-pme we
do it by hand).  Forces are ``-∂E/∂R`` obtained by automatic differentiation through
both the real-space pair distances (recomputed from the positions inside the timed
function, using the neighbour-list cell shifts) and the reciprocal-space part:
``jax.jit(jax.value_and_grad(...))`` for jax-pme, ``energy.backward()`` for torch-pme.

Neighbour lists are built with ``vesin`` (half lists, the default of both peers) in
:func:`make_runner`, outside the timed function.

The peers are imported lazily; this module imports without either of them (or
without jax / torch) and then simply reports them unavailable.  Importing jax through
this module switches on ``jax_enable_x64`` globally (float64 runs need it; float32
runs cast every input to float32).

Notes / pitfalls found while wiring the peers up (jax-pme 0.1.0, torch-pme 0.5.0):

* ``smearing`` is the Gaussian σ in both (v_LR(r) = erf(r/(√2σ))/r, kernel
  4π exp(-σ²k²/2)/k²); prefactor 1 means Gaussian units, so ``prefactor=COULOMB_K``.
* Both round PME/P3M meshes up to powers of two along each axis (n = 2^ceil(log2(
  2|a_i|/mesh_spacing + 1)), jax-pme with an extra ceil); the spacing actually used is
  about half of ``mesh_spacing``.  Candidates pick spacings that give the same mesh in
  both libraries.
* Ewald ``lr_wavelength``: both build ceil(|a_i|/λ) k-points per axis, i.e. |k| up to
  only ~π/λ, while torch-pme's Ewald error bound assumes 2π/λ; tuned wavelengths are
  10-1000x too inaccurate unless halved.
* torch-pme's PME (Lagrange) error bound is optimistic by up to ~20x at 1e-6;
  its P3M bound is roughly right for orthogonal cells.
* torch-pme's P3M influence function multiplies Cartesian k components by
  |a_i|/n_i, which is only correct for orthogonal cells: on triclinic cells its
  force error stalls around 1e-3.  jax-pme's P3M uses k·a_i/n_i and is fine.
* jax-pme has no tuning code (its ``prepare`` has a "todo: insert tuning logic");
  we use torch-pme's error bounds for both libraries.
* jax-pme's PME only implements 4 interpolation nodes.

Public interface: :data:`PEERS`, :func:`available`, :func:`make_runner`,
:func:`candidate_params`, :func:`best_runner`, :class:`Runner`, :class:`Result`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable

import numpy as np

#: Coulomb constant in eV·Å/e² used for every energy / force returned here.
COULOMB_K = 14.399645

#: Peer libraries known to this module, and the methods each one provides.
LIBRARIES = ("jaxpme", "torchpme")
_KINDS = ("ewald", "pme", "p3m")

#: Ewald candidates are skipped above this many atoms (O(N^2)-ish, not sensible).
EWALD_MAX_ATOMS = 8000
#: Ewald candidates whose (k-vectors x atoms) work arrays exceed this are skipped.
EWALD_MAX_KN = 6.0e7
#: Mesh candidates with more mesh points than this are skipped (memory).
MAX_MESH_POINTS = 256**3

# Interpolation orders each peer supports: jax-pme's Lagrange (PME) interpolation only
# implements 4 nodes, its B-spline (P3M) 1..5; torch-pme's PME 3..7, P3M 1..5.
_NODES = {
    ("jaxpme", "pme"): (4,),
    ("jaxpme", "p3m"): (4, 5),
    ("torchpme", "pme"): (4, 6),
    ("torchpme", "p3m"): (4, 5),
}

_AVAILABLE: dict[str, bool] | None = None


# ----------------------------------------------------------------------------- imports
def _import_jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jaxpme
    import jaxpme.kspace

    return jax, jnp, jaxpme


def _import_torch():
    import torch
    import torchpme
    import torchpme.lib.kvectors
    import torchpme.tuning.ewald
    import torchpme.tuning.p3m
    import torchpme.tuning.pme
    import torchpme.tuning.tuner

    return torch, torchpme


def available() -> dict[str, bool]:
    """Return ``{library: importable}`` for ``"jaxpme"`` and ``"torchpme"``.

    A library counts as available when it (and its array framework, jax or torch)
    imports without error, together with ``vesin`` which every runner needs for the
    neighbour list.  The result is cached.
    """
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            import vesin  # noqa: F401

            have_vesin = True
        except Exception:
            have_vesin = False
        out = {}
        for lib, imp in (("jaxpme", _import_jax), ("torchpme", _import_torch)):
            try:
                imp()
                out[lib] = have_vesin
            except Exception:
                out[lib] = False
        _AVAILABLE = out
    return dict(_AVAILABLE)


def __getattr__(name: str):
    # PEERS is computed lazily (PEP 562) so importing this module stays cheap.
    if name == "PEERS":
        avail = available()
        return tuple(f"{lib}-{kind}" for lib in LIBRARIES if avail[lib] for kind in _KINDS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _split(method: str) -> tuple[str, str]:
    try:
        lib, kind = method.split("-")
    except ValueError:
        raise ValueError(f"unknown peer method {method!r}") from None
    if lib not in LIBRARIES or kind not in _KINDS:
        raise ValueError(f"unknown peer method {method!r}")
    return lib, kind


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass
class Runner:
    """One prepared peer calculation.

    ``fn()`` runs one energy + forces evaluation, blocks until it is finished and
    returns ``(energy [eV], forces [eV/Å] as a float64 (N, 3) array)``.
    ``compile_s`` is the wall time of the first call (tracing / jit compilation
    included); that call's output is kept in ``first``.  ``info`` holds derived
    sizes (pairs in the half neighbour list, k-grid or mesh shape).
    """

    method: str
    params: dict
    dtype: str
    fn: Callable[[], tuple[float, np.ndarray]]
    compile_s: float
    first: tuple[float, np.ndarray] | None = None
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Result:
    """Fastest qualifying candidate found by :func:`best_runner`.

    ``median_s``: median wall time of one energy+forces call; ``compile_s``: first
    call; ``err``: measured relative RMS force error; ``energy`` in eV; ``min_s``:
    fastest timed call.  ``tried``
    lists every evaluated candidate (method, params, err, median_s or None).
    """

    method: str
    params: dict
    dtype: str
    median_s: float
    compile_s: float
    err: float
    energy: float
    min_s: float | None = None
    tried: list = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
def _as_inputs(positions, charges, cell):
    positions = np.ascontiguousarray(np.asarray(positions, dtype=np.float64))
    charges = np.ascontiguousarray(np.asarray(charges, dtype=np.float64).reshape(-1))
    cell = np.ascontiguousarray(np.asarray(cell, dtype=np.float64))
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError("positions must have shape (N, 3)")
    if charges.shape[0] != positions.shape[0]:
        raise ValueError("charges must have shape (N,)")
    if cell.shape != (3, 3):
        raise ValueError("cell must have shape (3, 3)")
    return positions, charges, cell


def _half_neighbor_list(positions, cell, cutoff):
    """vesin half list: i, j (int64), integer cell shifts S (float64) with
    r_ij = R_j - R_i + S @ cell."""
    import vesin

    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, S = nl.compute(points=positions, box=cell, periodic=True, quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.float64)


def _check_dtype(dtype) -> str:
    dtype = str(np.dtype(dtype))
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dtype


def _is_orthogonal(cell, tol=1e-10):
    g = cell @ cell.T
    return bool(np.all(np.abs(g - np.diag(np.diag(g))) <= tol * np.max(np.abs(g))))


def _ewald_kgrid_shape(cell, lr_wavelength):
    # both peers: ceil(|a_i| / lr_wavelength) k-points along reciprocal axis i
    n = np.ceil(np.linalg.norm(cell, axis=1) / lr_wavelength).astype(int)
    return tuple(int(x) for x in n)


def _mesh_shape(lib, cell, mesh_spacing):
    """Mesh shape the peer will use (both round up to powers of two)."""
    if lib == "jaxpme":
        _, _, jaxpme = _import_jax()
        return tuple(jaxpme.kspace.get_kgrid_mesh_shape(np.asarray(cell), mesh_spacing))
    torch, torchpme = _import_torch()
    ns = torchpme.lib.kvectors.get_ns_mesh(
        torch.tensor(cell, dtype=torch.float64), float(mesh_spacing)
    )
    return tuple(int(x) for x in ns)


def _spacing_for_mesh(cell, n):
    """A ``mesh_spacing`` that makes both peers use ``n`` (a power of two, >= 4)
    points along the longest lattice vector (shorter ones get <= n)."""
    lmax = float(np.max(np.linalg.norm(cell, axis=1)))
    return 2.0 * lmax / (n - 2) * (1.0 + 1e-6)


# ----------------------------------------------------------------------------- runners
def make_runner(method: str, positions, charges, cell, params: dict, dtype) -> Runner:
    """Prepare one peer calculation and run it once (the compile / warm-up call).

    ``method`` is one of :data:`PEERS` (``"<jaxpme|torchpme>-<ewald|pme|p3m>"``).
    ``params`` keys: ``cutoff`` (Å, real-space / neighbour-list cutoff), ``smearing``
    (Å, the peers' Gaussian width σ: v_LR(r) = erf(r / (√2 σ)) / r), and
    ``lr_wavelength`` (Å, Ewald) or ``mesh_spacing`` (Å) plus optional
    ``interpolation_nodes`` (default 4, PME / P3M).  Other keys are ignored.

    The half neighbour list, cell shifts, typed arrays and the calculator are built
    here; the returned ``Runner.fn`` only evaluates energy and forces.
    """
    lib, kind = _split(method)
    dtype = _check_dtype(dtype)
    positions, charges, cell = _as_inputs(positions, charges, cell)
    i, j, S = _half_neighbor_list(positions, cell, params["cutoff"])
    info = {"n_pairs": int(len(i))}
    if kind == "ewald":
        info["kgrid"] = _ewald_kgrid_shape(cell, params["lr_wavelength"])
    else:
        info["mesh"] = _mesh_shape(lib, cell, params["mesh_spacing"])
    build = _jax_fn if lib == "jaxpme" else _torch_fn
    fn = build(kind, positions, charges, cell, i, j, S, params, dtype)
    t0 = time.perf_counter()
    first = fn()
    compile_s = time.perf_counter() - t0
    return Runner(method, dict(params), dtype, fn, compile_s, first, info)


def _jax_fn(kind, positions, charges, cell, i, j, S, params, dtype):
    jax, jnp, jaxpme = _import_jax()
    fdt = jnp.float32 if dtype == "float32" else jnp.float64
    nodes = int(params.get("interpolation_nodes", 4))
    if kind == "ewald":
        calc = jaxpme.Ewald(prefactor=COULOMB_K)
        grid_shape = jaxpme.kspace.get_kgrid_ewald_shape(cell, params["lr_wavelength"])
    elif kind == "pme":
        calc = jaxpme.PME(prefactor=COULOMB_K, interpolation_nodes=nodes)
        grid_shape = jaxpme.kspace.get_kgrid_mesh_shape(cell, params["mesh_spacing"])
    else:
        calc = jaxpme.P3M(prefactor=COULOMB_K, interpolation_nodes=nodes)
        grid_shape = jaxpme.kspace.get_kgrid_mesh_shape(cell, params["mesh_spacing"])

    # only the shape of k_grid is used by jax-pme; keep it small
    k_grid = jnp.zeros(grid_shape, dtype=jnp.int8)
    q = jnp.asarray(charges, dtype=fdt)
    c = jnp.asarray(cell, dtype=fdt)
    r = jnp.asarray(positions, dtype=fdt)
    ii = jnp.asarray(i, dtype=jnp.int32)
    jj = jnp.asarray(j, dtype=jnp.int32)
    ss = jnp.asarray(S, dtype=fdt)
    sm = jnp.asarray(params["smearing"], dtype=fdt)

    # E = sum_i q_i V_i, V_i already carries the 1/2 and the prefactor
    vg = jax.jit(jax.value_and_grad(calc.energy, argnums=2))

    def fn():
        e, g = vg(q, c, r, ii, jj, ss, k_grid, sm)
        e, g = jax.block_until_ready((e, g))
        return float(e), -np.asarray(g, dtype=np.float64)

    return fn


def _torch_fn(kind, positions, charges, cell, i, j, S, params, dtype):
    torch, torchpme = _import_torch()
    tdt = torch.float32 if dtype == "float32" else torch.float64
    pot = torchpme.CoulombPotential(smearing=float(params["smearing"]), prefactor=COULOMB_K)
    nodes = int(params.get("interpolation_nodes", 4))
    if kind == "ewald":
        calc = torchpme.EwaldCalculator(pot, lr_wavelength=float(params["lr_wavelength"]))
    elif kind == "pme":
        calc = torchpme.PMECalculator(
            pot, mesh_spacing=float(params["mesh_spacing"]), interpolation_nodes=nodes
        )
    else:
        calc = torchpme.P3MCalculator(
            pot, mesh_spacing=float(params["mesh_spacing"]), interpolation_nodes=nodes
        )
    calc.to(dtype=tdt)  # smearing / prefactor buffers are created as float64

    q = torch.tensor(charges, dtype=tdt).reshape(-1, 1)
    c = torch.tensor(cell, dtype=tdt)
    r0 = torch.tensor(positions, dtype=tdt)
    ii = torch.tensor(i, dtype=torch.int64)
    jj = torch.tensor(j, dtype=torch.int64)
    pairs = torch.stack([ii, jj], dim=1)
    shift = torch.tensor(S @ cell, dtype=tdt)  # Cartesian image shifts, host prep

    def fn():
        r = r0.detach().clone().requires_grad_(True)
        d = torch.linalg.norm(r[jj] - r[ii] + shift, dim=1)
        v = calc(charges=q, cell=c, positions=r, neighbor_indices=pairs, neighbor_distances=d)
        e = (q * v).sum()
        e.backward()
        return float(e.detach()), -r.grad.detach().numpy().astype(np.float64)

    return fn


# ----------------------------------------------------------------------------- tuning
def _rough_force_rms(positions, charges, cell):
    """Cheap estimate of the RMS Coulomb force (eV/Å): screened (erfc) real-space
    pair forces, which dominate in dense ionic systems.  Only used to turn a relative
    accuracy target into the absolute one the error estimators expect."""
    n = len(positions)
    vol = abs(np.linalg.det(cell))
    a = (vol / n) ** (1 / 3)
    sigma = 1.5 * a
    rc = 4.5 * sigma
    i, j, S = _half_neighbor_list(positions, cell, rc)
    d = positions[j] - positions[i] + S @ cell
    r = np.linalg.norm(d, axis=1)
    x = r / (math.sqrt(2) * sigma)
    erfc_v = _erfc_np(x)
    # -d/dr [erfc(x)/r] = erfc/r^2 + 2/sqrt(pi) exp(-x^2) / (sqrt2 sigma r)
    fmag = erfc_v / r**2 + np.sqrt(2 / np.pi) / sigma * np.exp(-(x**2)) / r
    fvec = (COULOMB_K * charges[i] * charges[j] * fmag / r)[:, None] * d
    f = np.zeros_like(positions)
    np.add.at(f, j, fvec)
    np.add.at(f, i, -fvec)
    return float(np.sqrt(np.mean(np.sum(f**2, axis=1))))


def _erfc_np(x):
    # Abramowitz-Stegun 7.1.26 (|err| < 1.5e-7), plenty for a force-scale estimate
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return poly * np.exp(-(x**2))


class _Estimator:
    """Error estimates (absolute RMS force error, prefactor 1) for candidate setup.

    Uses torch-pme's own tuning machinery when it is importable (``TunerBase.
    estimate_smearing`` and the ``EwaldErrorBounds`` / ``PMEErrorBounds`` /
    ``P3MErrorBounds`` used by ``torchpme.tuning.tune_*``; jax-pme ships no tuning),
    otherwise textbook Kolafa-Perram style estimates.
    """

    def __init__(self, positions, charges, cell):
        self.positions, self.charges, self.cell = positions, charges, cell
        self.n = len(positions)
        self.volume = abs(float(np.linalg.det(cell)))
        self.prefac = 2.0 * float(np.sum(charges**2)) / math.sqrt(self.n)
        self.torch = None
        if available()["torchpme"]:
            torch, torchpme = _import_torch()
            self.torch, self.torchpme = torch, torchpme
            t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
            self.tq, self.tc, self.tr = t(charges).reshape(-1, 1), t(cell), t(positions)
            self.bounds = {
                "ewald": torchpme.tuning.ewald.EwaldErrorBounds(self.tq, self.tc, self.tr),
                "pme": torchpme.tuning.pme.PMEErrorBounds(self.tq, self.tc, self.tr),
                "p3m": torchpme.tuning.p3m.P3MErrorBounds(self.tq, self.tc, self.tr),
            }

    def smearing(self, cutoff, acc):
        """σ for which the real-space error at ``cutoff`` is about ``acc``."""
        if self.torch is not None:
            try:
                tuner = self.torchpme.tuning.tuner.TunerBase(
                    self.tq, self.tc, self.tr, float(cutoff), self.torchpme.PMECalculator
                )
                return float(tuner.estimate_smearing(float(acc)))
            except (ValueError, ArithmeticError):
                pass
        arg = 2.0 * self.prefac / (acc * math.sqrt(cutoff * self.volume))
        return cutoff / math.sqrt(2.0 * math.log(max(arg, math.e)))

    def kspace(self, kind, smearing, cutoff, **kp):
        if self.torch is not None:
            return float(self.bounds[kind](smearing=smearing, cutoff=cutoff, **kp))
        # fallback: k-space error ~ real-space error at the same exponent.  Ewald uses
        # the same (optimistic) k-cutoff 2*pi/lr_wavelength convention as torch-pme's
        # bound, which candidate_params corrects for.
        if kind == "ewald":
            kmax = 2.0 * math.pi / kp["lr_wavelength"]
            return self.prefac / math.sqrt(self.volume) * math.exp(-0.5 * (smearing * kmax) ** 2)
        h = kp["mesh_spacing"] / 2.0
        p = kp["interpolation_nodes"]
        return self.prefac / self.volume ** (2 / 3) * (h / (math.sqrt(2) * smearing)) ** p


def _cost(kind, n, volume, cutoff, shape, nodes=4):
    """Very rough relative cost of one energy+forces call (orders candidates)."""
    pairs = 0.5 * n * (n / volume) * 4.0 / 3.0 * math.pi * cutoff**3
    c = 40e-9 * pairs
    m = float(np.prod(shape))
    if kind == "ewald":
        return c + 40e-9 * m * n
    return c + 4e-9 * m * math.log2(max(m, 2.0)) + 25e-9 * n * nodes**3


def candidate_params(method: str, positions, charges, cell, target: float,
                     force_rms: float | None = None) -> list[dict]:
    """Candidate parameter sets for ``method`` aiming at relative RMS force error
    ``target``, cheapest (estimated) first.

    The relative target is converted to the absolute force error the peers' error
    formulas use with ``force_rms`` (eV/Å; estimated cheaply when not given).  For a
    few real-space cutoffs (in units of the mean interparticle spacing) the smearing
    comes from torch-pme's ``estimate_smearing`` and the k-space resolution is the
    cheapest one that torch-pme's error bounds accept (mesh methods: also for each
    supported interpolation order).  Because the estimates are not reliable (see the
    module notes) each tuned mesh point gets a neighbour with the next finer mesh,
    and Ewald wavelengths are halved, with one slightly coarser neighbour.  Mesh
    spacings are chosen so both peers round to the same power-of-two mesh.
    Candidates exceeding :data:`MAX_MESH_POINTS` / :data:`EWALD_MAX_KN`, or Ewald
    with N > :data:`EWALD_MAX_ATOMS`, are dropped.

    Each dict holds ``cutoff``, ``smearing`` and ``lr_wavelength`` or
    (``mesh_spacing``, ``interpolation_nodes``), plus informational ``kgrid`` /
    ``mesh``, ``est_err`` (estimated relative error), ``est_cost`` and ``source``.
    """
    lib, kind = _split(method)
    positions, charges, cell = _as_inputs(positions, charges, cell)
    n = len(positions)
    if kind == "ewald" and n > EWALD_MAX_ATOMS:
        return []
    if force_rms is None:
        force_rms = _rough_force_rms(positions, charges, cell)
    scale = force_rms / COULOMB_K  # relative -> absolute (prefactor-1 units)
    acc = float(target) * scale
    est = _Estimator(positions, charges, cell)
    volume = est.volume
    a = (volume / n) ** (1.0 / 3.0)
    lengths = np.linalg.norm(cell, axis=1)

    out: list[dict] = []
    if kind == "ewald":
        # Ewald favours longer cutoffs (its optimum grows like N^(1/6)).  torch-pme's
        # Ewald error bound assumes a k-space cutoff 2*pi/lr_wavelength, but both peers
        # build a box of ceil(|a_i|/lr_wavelength) k-points per axis, i.e. |k| only up
        # to ~pi/lr_wavelength: the estimate is far too optimistic (measured 10-1000x),
        # so the tuned wavelength is halved ("tuned/2", then measured errors land near
        # the target) plus one slightly coarser neighbour.
        lmax = float(np.max(lengths))
        for rc_a in (3.0, 4.0, 5.0, 6.5, 8.0):
            rc = rc_a * a
            sm = est.smearing(rc, acc)
            lam = None
            for m in range(1, 400):  # distinct k-grids: lr_wavelength = L_max / m
                lam = lmax / m * (1.0 - 1e-9)
                if est.kspace("ewald", sm, rc, lr_wavelength=lam) <= acc:
                    break
            e_k = est.kspace("ewald", sm, rc, lr_wavelength=lam)
            m_c = int(round(lmax / lam)) * 2
            for src, m in (("tuned/2", m_c), ("neighbour", m_c - 1)):
                lam_c = lmax / m * (1.0 - 1e-9)
                shape = _ewald_kgrid_shape(cell, lam_c)
                if np.prod(shape) * n > EWALD_MAX_KN:
                    continue
                out.append(dict(cutoff=rc, smearing=sm, lr_wavelength=lam_c, kgrid=shape,
                                est_err=math.hypot(e_k, acc) / scale,
                                est_cost=_cost("ewald", n, volume, rc, shape),
                                source=src))
    else:
        for rc_a in (2.5, 3.25, 4.25):
            rc = rc_a * a
            sm = est.smearing(rc, acc)
            for nodes in _NODES[(lib, kind)]:
                found = []
                for k in range(2, 11):  # 4 .. 1024 points along the longest axis
                    h = _spacing_for_mesh(cell, 2**k)
                    e = est.kspace(kind, sm, rc, mesh_spacing=h, interpolation_nodes=nodes)
                    if e <= acc:
                        found.append((h, e))
                        if len(found) == 2:
                            break
                for src, (h, e) in zip(("tuned", "neighbour"), found):
                    shape = _mesh_shape(lib, cell, h)
                    if np.prod(shape) > MAX_MESH_POINTS:
                        continue
                    out.append(dict(cutoff=rc, smearing=sm, mesh_spacing=h,
                                    interpolation_nodes=nodes, mesh=shape,
                                    est_err=math.hypot(e, acc) / scale,
                                    est_cost=_cost(kind, n, volume, rc, shape, nodes),
                                    source=src))
    uniq = {}
    for p in sorted(out, key=lambda p: p["est_cost"]):
        uniq.setdefault(_key(method, p), p)
    return list(uniq.values())


# ----------------------------------------------------------------------------- search
def _rel_err(forces, reference):
    diff = np.asarray(forces, dtype=np.float64) - reference
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1)) / np.mean(np.sum(reference**2, axis=1))))


def _time(fn, min_calls=5, min_total_s=0.2, max_calls=50, abort_above=math.inf):
    """Median and min wall time of ``fn`` over >= ``min_calls`` calls after one
    warm-up call.  Gives up after the first timed call (returning it) when that call
    is slower than ``abort_above`` (cannot beat the current best anyway)."""
    fn()  # warm-up (the compile call already happened in make_runner)
    times = []
    t_start = time.perf_counter()
    while len(times) < min_calls or (
        time.perf_counter() - t_start < min_total_s and len(times) < max_calls
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if times[0] > abort_above:
            break
    return statistics.median(times), min(times)


def _key(method, p):
    grid = p.get("kgrid", p.get("mesh"))
    return (method, round(p["cutoff"], 6), round(p["smearing"], 6), grid,
            p.get("interpolation_nodes"))


def best_runner(library: str, positions, charges, cell, reference_forces, target: float,
                dtype, max_candidates: int = 12, time_budget_s: float = 60.0,
                verbose: bool = False) -> Result | None:
    """Fastest measured-accurate setting of one peer library.

    Tries the library's P3M, PME and Ewald (Ewald only for N <= EWALD_MAX_ATOMS)
    over :func:`candidate_params`, cheapest first.  Each candidate is built with
    :func:`make_runner`, its relative RMS force error against ``reference_forces``
    (eV/Å) is measured on the first call, and only candidates with ``err <= target``
    are timed (median of >= 5 calls after a warm-up).  When no candidate of a round
    qualifies, the target handed to the estimators is tightened by the measured
    miss factor and a new round is tried; when the estimators turn out pessimistic
    (all errors far below target) one looser round is tried.  A method stops after
    two qualifying candidates in a round, ``max_candidates`` evaluations, or its
    share of ``time_budget_s``.

    Returns the :class:`Result` with the smallest median time, or ``None`` if no
    candidate reached ``target`` (or the library is unavailable).
    """
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}")
    if not available()[library]:
        return None
    dtype = _check_dtype(dtype)
    positions, charges, cell = _as_inputs(positions, charges, cell)
    ref = np.asarray(reference_forces, dtype=np.float64)
    force_rms = float(np.sqrt(np.mean(np.sum(ref**2, axis=1))))
    n = len(positions)
    kinds = ["p3m", "pme"] + (["ewald"] if n <= EWALD_MAX_ATOMS else [])
    if library == "torchpme" and not _is_orthogonal(cell):
        # torch-pme's P3M influence function uses Cartesian k_a * |a_i| / n_i, only
        # right for orthogonal cells: its error stalls around 1e-3 for triclinic
        # cells, so try it last (it gets what is left of the time budget).
        kinds = kinds[1:] + kinds[:1]
    t_begin = time.perf_counter()
    tried: list[dict] = []
    best: Result | None = None

    def log(*a):
        if verbose:
            print(f"[{library} {dtype}]", *a, flush=True)

    for ik, kind in enumerate(kinds):
        method = f"{library}-{kind}"
        remaining = time_budget_s - (time.perf_counter() - t_begin)
        t_method_end = time.perf_counter() + remaining / (len(kinds) - ik)
        seen: set = set()
        n_eval = 0
        level = float(target)
        loosened = False
        for _round in range(4):
            cands = [p for p in candidate_params(method, positions, charges, cell, level,
                                                 force_rms=force_rms)
                     if _key(method, p) not in seen]
            errs, n_ok = [], 0
            for p in cands:
                if n_eval >= max_candidates or time.perf_counter() > t_method_end:
                    break
                if best is not None and p["est_cost"] > 3.0 * best.median_s:
                    log(f"{kind}: skipped, estimated cost {p['est_cost']:.3g} s >> best")
                    continue
                seen.add(_key(method, p))
                n_eval += 1
                try:
                    runner = make_runner(method, positions, charges, cell, p, dtype)
                except Exception as exc:  # e.g. out of memory
                    tried.append(dict(method=method, params=p, err=None, median_s=None,
                                      error=repr(exc)))
                    log("failed", p, repr(exc))
                    continue
                energy, forces = runner.first
                err = _rel_err(forces, ref)
                errs.append(err)
                median = None
                if err <= target:
                    n_ok += 1
                    median, fastest = _time(
                        runner.fn, abort_above=3.0 * best.median_s if best else math.inf)
                    if best is None or median < best.median_s:
                        best = Result(method, runner.params, dtype, median, runner.compile_s,
                                      err, energy, fastest)
                tried.append(dict(method=method, params=p, err=err, median_s=median,
                                  compile_s=runner.compile_s))
                log(f"{kind} rc={p['cutoff']:.2f} sm={p['smearing']:.3f} "
                    f"grid={p.get('kgrid', p.get('mesh'))} nodes={p.get('interpolation_nodes')} "
                    f"est={p['est_err']:.1e} err={err:.2e} t={median} c={runner.compile_s:.2f}")
                del runner
                if n_ok >= 2:
                    break
            if not errs or n_eval >= max_candidates or time.perf_counter() > t_method_end:
                break
            if n_ok == 0:
                # estimators were optimistic: tighten by the measured miss factor
                level = level * target / (1.5 * min(errs))
                level = min(level, float(target) / 2 ** (_round + 1))
            elif not loosened and max(errs) < 0.1 * target and _round == 0:
                # estimators were pessimistic: one looser round
                loosened = True
                level = level * min(30.0, 0.5 * target / max(errs))
            else:
                break
    if best is not None:
        best.tried = tried
    return best
