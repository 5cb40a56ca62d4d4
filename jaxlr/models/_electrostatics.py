"""Electrostatics of one padded structure inside a model (static plan + jittable energy).

Open boundary: all pairs from a dense (N, N) list built from the atom mask, exact, as
before.  Periodic: smooth PME of Gaussian charges whose widths σ are learned per species.

Why the real-space cutoff is planned from a width bound (design A)
------------------------------------------------------------------
For Gaussian charges the Ewald real-space kernel is ``[erf(r/√2γ) − erf(r/√2s)]/r``
(γ² = σ_i² + σ_j², s the smearing); its tail ``erfc(r/√2γ)/r`` is set by the *widths*,
whatever the smearing.  With γ ≈ 1.4 Å it is still 5e-3/r at 4 Å, so a real-space cutoff
equal to the descriptors' 4 Å made the energy depend on which pairs the neighbour list
happened to hold (the skin) and jump when pairs crossed the cutoff (NVE drift).

:func:`plan_coulomb` therefore plans, on the host, for Gaussian charges of a declared or
measured upper bound ``σ_max`` of the widths (:attr:`CoulombSpec.sigma_max`):
:func:`jaxlr.tuning.tune_coulomb` with ``sigma = σ_max`` chooses the smearing, mesh and a
real-space radius r_on whose truncation error (of the Gaussian tail and of the Ewald
``erfc(r/√2s)/r`` tail) meets :attr:`CoulombSpec.accuracy`.  The kernel is then switched
off smoothly, ``K(r) · S(r)``, with the C² switch S = 1 − t³(10 − 15t + 6t²),
t = (r − r_on)/w, over w = :attr:`CoulombSpec.switch_width`, so it vanishes with two
continuous derivatives at the cutoff r_c = r_on + w (:attr:`CoulombSpec.cutoff`), and
every pair beyond r_c is masked.  The energy is thus a smooth function of the positions
and exactly independent of the neighbour-list skin; batches must be built with
:attr:`jaxlr.models.Potential.cutoff`, which becomes max(descriptor cutoffs, r_c) for a
planned periodic model (descriptors ignore neighbours beyond their own cutoff exactly:
:func:`jaxlr.features.spherical_expansion_terms` gives them zero weight and zero gradient).

* Latent-charge model: self, reciprocal and background parts from
  :func:`jaxlr.electrostatics.long_range_energy`, the switched real-space sum here.
* Qeq model: the charges come from the PCG solve over the list masked at r_c (hard);
  the energy at those charges uses the switched kernel.  The charges of the solve jump by
  O(tail) when a pair crosses r_c, but the energy is stationary in the charges, so the
  energy jumps only at second order in the tail (~ 1e-12 of the Coulomb energy).
* Density model: the solve runs over the list masked at r_c; the energy adds the
  correction ½ Σ (S(r) − 1) c_iᵀ C_ij c_j over the real-space pair blocks C_ij of the s and
  p functions (:func:`jaxlr.electrostatics.pair_blocks`), so the pair blocks enter as
  S(r) · C_ij: smooth at r_c, and again stationary in the coefficients.

Design B (the Gaussian factors e^{−k²σ_a²/2} on per-species meshes, no real-space part)
was not taken: the smallest widths (0.5 Å) need a mesh spacing of ~0.3 Å, i.e. per
species and per s / p shell a mesh ~50× finer in points than the one PME of the point
charges uses now, and the p functions need their own gradients on each of them.

Learned widths may grow past the planned bound during training.  That is not an error
inside ``jit`` but a flag: :meth:`jaxlr.models.Potential.width_check` (jittable) returns
``(ok, largest width)``, :meth:`~jaxlr.models.Potential.predict` raises when it is False,
and the loop re-plans with ``potential.adapted_to(cells, variables=variables)`` (a new
``sigma_max`` = :data:`WIDTH_MARGIN` × the largest current width, hence a new cutoff,
mesh and compiled step) and rebuilds its batches with the new ``potential.cutoff``.
Past the bound the energy stays continuous, only its error grows (∝ e^{−r_on²/4σ²}).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..electrostatics._energy import coulomb_energy, long_range_energy
from ..electrostatics._gaussian_multipoles import pair_blocks
from ..electrostatics._kernels import pair_kernel
from ..electrostatics._pme import MeshSpec
from ..system._cell import fft_friendly, perpendicular_widths
from ..system._neighbors import Neighbors, pair_displacements
from ..tuning._coulomb import standin_charges, tune_coulomb
from ..units import KE

__all__ = ["CoulombSpec", "WIDTH_MARGIN", "plan_coulomb", "all_pairs", "coulomb_kwargs", "structure_coulomb_energy",
           "smooth_switch", "real_space_pairs", "multipole_switch_correction", "widths_within_plan"]

#: a bound σ_max planned from widths (initial hyperparameters or current variables) is
#: this factor above the largest of them, so training can move them without re-planning
WIDTH_MARGIN = 1.2


@dataclasses.dataclass(frozen=True)
class CoulombSpec:
    """Static Coulomb choices of a model (JSON-friendly).

    Attributes:
      accuracy: target relative RMS force error of the periodic sum.
      smearing: Ewald smearing (Å), mesh (K1, K2, K3) and order of the PME mesh: set by
        :func:`plan_coulomb` for periodic data, None for open boundaries.
      sigma_max: upper bound (Å) of the Gaussian widths the periodic plan holds for.  Give
        it to declare a bound; :func:`plan_coulomb` records the bound it used here.
      cutoff: real-space cutoff r_c (Å) of the periodic sum, set by :func:`plan_coulomb`
        (None: not planned, open boundary).
      switch_width: width w (Å) of the C² switch that takes the real-space kernel to zero
        over [r_c − w, r_c].
    """

    accuracy: float = 1e-5
    smearing: float | None = None
    mesh: tuple | None = None
    order: int = 6
    sigma_max: float | None = None
    cutoff: float | None = None
    switch_width: float = 1.0


def periodic_cells(cells):
    """The cells as float64 arrays, or None when all are open; a mix raises ValueError."""
    cells = [None if c is None else np.asarray(c, dtype=np.float64) for c in cells]
    if all(c is None for c in cells):
        return None
    if any(c is None for c in cells):
        raise ValueError("a model's cells must be all periodic or all open.")
    return cells


def mesh_spacing(cell: np.ndarray, mesh: MeshSpec) -> float:
    """Largest spacing (Å) of ``mesh`` between mesh planes of ``cell``."""
    mesh_cell = np.asarray(mesh.basis) @ cell
    return float(np.max(perpendicular_widths(mesh_cell) / np.asarray(mesh.shape)))


def shape_for_spacing(cell: np.ndarray, spacing: float) -> tuple:
    """FFT-friendly mesh points along the cell vectors as given for a plane spacing ≤ ``spacing``."""
    return tuple(fft_friendly(int(np.ceil(w / spacing))) for w in perpendicular_widths(cell))


def plan_coulomb(spec: CoulombSpec, cells, sigma_max: float) -> CoulombSpec:
    """Choose smearing, real-space cutoff and a common PME mesh for a family of cells (host).

    The smearing s and the real-space radius r_on are tuned (:func:`jaxlr.tuning.tune_coulomb`)
    for Gaussian charges of width ``sigma_max`` in the largest cell, with ±1 stand-in charges
    at a water-like density, so that both real-space tails (``erfc(r/√2s)/r`` and the
    Gaussian ``erfc(r/√2γ_max)/r``, γ_max = √2 σ_max) meet ``spec.accuracy``; the cutoff is
    r_c = r_on + ``spec.switch_width`` (the switch, module docstring).  The mesh spacing
    the largest cell needs is applied to every cell (finest over the family).

    Args:
      spec: the model's :class:`CoulombSpec`.  cells: (3, 3) arrays in Å or None (all
        open: ``spec`` is returned unchanged).  sigma_max: width bound in Å (> 0).

    Returns:
      ``spec`` with ``smearing``, ``mesh``, ``order``, ``cutoff`` (Å) and ``sigma_max`` set.

    Example:
      >>> import numpy as np
      >>> p = plan_coulomb(CoulombSpec(), [np.eye(3) * 12.0], sigma_max=1.0)
      >>> 6.0 < p.cutoff < 9.0, p.sigma_max
      (True, 1.0)
    """
    cells = periodic_cells(cells)
    if cells is None:
        return spec
    sigma_max = float(sigma_max)
    if not np.isfinite(sigma_max) or sigma_max <= 0.0:
        raise ValueError(f"sigma_max must be a width > 0 in Å, got {sigma_max!r}.")
    if not spec.switch_width > 0.0:
        raise ValueError(f"switch_width must be > 0 (Å), got {spec.switch_width!r}.")
    vols = [abs(np.linalg.det(c)) for c in cells]
    big = cells[int(np.argmax(vols))]
    n = max(8, int(0.1 * max(vols)))
    rng = np.random.default_rng(0)
    pos = rng.random((n, 3)) @ big
    p = tune_coulomb(pos, standin_charges(n), big, np.full(n, sigma_max), method="pme", accuracy=spec.accuracy,
                     order=spec.order)
    h = mesh_spacing(big, p.mesh)
    shape = [0, 0, 0]
    for c in cells:
        fine = shape_for_spacing(c, h)
        shape = [max(shape[d], fine[d], p.mesh.order) for d in range(3)]
    return dataclasses.replace(spec, smearing=float(p.smearing), mesh=tuple(int(k) for k in shape),
                               order=int(p.mesh.order), sigma_max=sigma_max,
                               cutoff=float(p.cutoff) + float(spec.switch_width))


def widths_within_plan(widths, spec: CoulombSpec):
    """True (a jax bool) when every Gaussian width is within the planned bound (jittable).

    Args:
      widths: array of widths in Å (any shape).  spec: a :class:`CoulombSpec`.

    Returns:
      ``max(widths) <= spec.sigma_max``, or True when nothing is planned (open boundary).

    Example:
      >>> import jax.numpy as jnp
      >>> bool(widths_within_plan(jnp.array([0.9, 1.3]), CoulombSpec(sigma_max=1.2)))
      False
    """
    widths = jnp.asarray(widths)
    if spec.sigma_max is None:
        return jnp.ones((), bool)
    return jnp.max(widths) <= spec.sigma_max


def smooth_switch(r, r_on, width):
    """C² switch: 1 for r ≤ r_on, 0 for r ≥ r_on + width, 1 − t³(10 − 15t + 6t²) between.

    Args:
      r: distances in Å (any shape).  r_on: where the switch starts (Å).  width: its
        width w in Å (> 0); t = (r − r_on)/w.

    Returns:
      S(r), dimensionless, with S' and S'' continuous (zero at both ends).

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(v), 6) for v in smooth_switch(jnp.array([1.0, 2.5, 3.0, 4.0]), 2.0, 1.0)]
      [1.0, 0.5, 0.0, 0.0]
    """
    t = jnp.clip((r - r_on) / width, 0.0, 1.0)
    return 1.0 - t * t * t * (10.0 + t * (-15.0 + 6.0 * t))


def real_space_pairs(s, spec: CoulombSpec):
    """The periodic real-space pairs of one structure within the planned cutoff (jittable).

    Args:
      s: one (unbatched) :class:`jaxlr.models.AtomsBatch` entry with a cell and a full
        neighbour list built with at least ``spec.cutoff`` (any skin).
      spec: a planned :class:`CoulombSpec`.

    Returns:
      ``(neighbors, d, r, switch)``: the list with every slot beyond r_c masked, the
      displacements (N, M, 3) in Å (a fixed stand-in on masked slots), the distances
      (N, M) in Å (1 on masked slots) and S(r) (0 on masked slots).

    Example:
      >>> import jax, numpy as np
      >>> from jaxlr.testing import toy_batch
      >>> spec = plan_coulomb(CoulombSpec(), [np.eye(3) * 7.0], sigma_max=1.0)
      >>> s = jax.tree_util.tree_map(lambda x: x[0], toy_batch((1, 8), cutoff=spec.cutoff + 1.0, periodic=True))
      >>> nbrs, d, r, switch = real_space_pairs(s, spec)
      >>> bool((r[nbrs.mask] < spec.cutoff).all()), bool((switch[~nbrs.mask] == 0).all())
      (True, True)
    """
    nb = s.neighbors
    n = s.positions.shape[0]
    comps, _ = pair_displacements(s.positions, s.cell, jnp.arange(n), nb.idx, nb.shifts)
    d = jnp.stack(comps, axis=-1)
    r2 = jnp.sum(d * d, axis=-1)
    live = nb.mask & (r2 < spec.cutoff**2) & (r2 > 0.0)
    d = jnp.where(live[..., None], d, jnp.asarray([0.0, 0.0, 1.0], d.dtype))
    r = jnp.sqrt(jnp.where(live, r2, 1.0))
    switch = jnp.where(live, smooth_switch(r, spec.cutoff - spec.switch_width, spec.switch_width), 0.0)
    return dataclasses.replace(nb, mask=live), d, r, switch


def all_pairs(atom_mask) -> Neighbors:
    """A dense full (N, N−…) list of every pair of real atoms (open boundary)."""
    n = atom_mask.shape[0]
    idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :], (n, n))
    mask = atom_mask[:, None] & atom_mask[None, :] & ~jnp.eye(n, dtype=bool)
    return Neighbors(idx=idx, mask=mask)


def _check_planned(spec: CoulombSpec):
    if spec.mesh is None:
        raise ValueError("periodic electrostatics needs a mesh: call Potential.adapted_to(cells) first.")
    if spec.cutoff is None:
        raise ValueError("this periodic Coulomb plan has no real-space cutoff (planned before the widths were "
                         "taken into account): call Potential.adapted_to(cells) again and rebuild the batches "
                         "with the new Potential.cutoff.")


def coulomb_kwargs(s, spec: CoulombSpec):
    """Keyword arguments of :func:`jaxlr.coulomb_energy` / :func:`jaxlr.qeq_solve` for one structure.

    Periodic: the neighbour list is masked beyond ``spec.cutoff`` (hard), so the solvers
    see the same pairs whatever the skin of the batch's list.
    """
    if s.cell is None:
        return dict(cell=None, smearing=None, neighbors=all_pairs(s.atom_mask), kvectors=None, method="direct",
                    mesh=None)
    _check_planned(spec)
    nbrs, _, _, _ = real_space_pairs(s, spec)
    return dict(cell=s.cell, smearing=jnp.asarray(spec.smearing, s.positions.dtype), neighbors=nbrs,
                kvectors=None, method="pme", mesh=MeshSpec(tuple(spec.mesh), int(spec.order)))


def structure_coulomb_energy(s, charges, sigma, spec: CoulombSpec, background: bool = False):
    """Coulomb energy (eV) of Gaussian charges (e, widths σ in Å) on one padded structure.

    Open boundary: every pair, exact.  Periodic: PME with the switched real-space kernel
    of the module docstring (smooth in the positions, independent of the list's skin).
    """
    if s.cell is None:
        return coulomb_energy(s.positions, charges, sigma=sigma, background=background, **coulomb_kwargs(s, spec))
    _check_planned(spec)
    dtype = s.positions.dtype
    smearing = jnp.asarray(spec.smearing, dtype)
    nbrs, _, r, switch = real_space_pairs(s, spec)
    idx = nbrs.idx
    gamma = jnp.sqrt(sigma[:, None] ** 2 + sigma[idx] ** 2)
    kern = pair_kernel(r, gamma, smearing)
    pair = jnp.where(nbrs.mask, charges[:, None] * charges[idx] * kern * switch, 0.0)
    real = 0.5 * KE * jnp.sum(pair)
    return real + long_range_energy(s.positions, charges, cell=s.cell, sigma=sigma, smearing=smearing,
                                    method="pme", mesh=MeshSpec(tuple(spec.mesh), int(spec.order)),
                                    background=background)


def multipole_switch_correction(s, coefficients, sigma_s, sigma_p, spec: CoulombSpec):
    """½ Σ_ij (S(r_ij) − 1) KE c_iᵀ C_ij c_j over the periodic real-space pairs (eV, jittable).

    Added to the energy of a density solve over the list masked at r_c, it turns the
    real-space pair blocks C_ij of the s and p Gaussians (Ewald kernel,
    :func:`jaxlr.electrostatics.pair_blocks`) into S(r) C_ij, which vanish smoothly at r_c.

    Args:
      s: one periodic structure.  coefficients: (N, n_s + 3 n_p).  sigma_s: (N, n_s),
        sigma_p: (N, n_p) widths in Å.  spec: a planned :class:`CoulombSpec`.

    Returns:
      scalar energy correction in eV.

    Example:
      >>> import jax, numpy as np
      >>> from jaxlr.testing import toy_batch
      >>> spec = plan_coulomb(CoulombSpec(), [np.eye(3) * 7.0], sigma_max=1.0)
      >>> s = jax.tree_util.tree_map(lambda x: x[0], toy_batch((1, 8), cutoff=spec.cutoff, periodic=True))
      >>> n = s.positions.shape[0]
      >>> c = jnp.zeros((n, 4)).at[:, 0].set(jnp.where(jnp.arange(n) % 2 == 0, 0.5, -0.5))
      >>> multipole_switch_correction(s, c, jnp.ones((n, 1)), jnp.ones((n, 1)), spec).shape
      ()
    """
    _check_planned(spec)
    ns = sigma_s.shape[1]
    nbrs, d, _, switch = real_space_pairs(s, spec)
    idx = nbrs.idx
    shells = jnp.concatenate([sigma_s, sigma_p], axis=1)
    smearing = jnp.asarray(spec.smearing, s.positions.dtype)
    blocks = pair_blocks(d, shells[:, None, :], shells[idx], ns, smearing=smearing)       # (N, M, nb, nb)
    weight = jnp.where(nbrs.mask, switch - 1.0, 0.0)
    e = jnp.einsum("na,nmab,nmb,nm->", coefficients, blocks, coefficients[idx], weight)
    return 0.5 * KE * e
