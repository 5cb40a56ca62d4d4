"""Molten NaCl: the Tosi–Fumi short range, a toy Qeq variant and a starting configuration.

* :func:`tosi_fumi_neighbor_list` — the Born–Mayer–Huggins short range of Tosi & Fumi
  (1964) for NaCl as a jax-md energy function (``neighbor_fn, energy_fn``); add a
  :func:`jaxlr.md.coulomb_neighbor_list` with charges ±1 for the full rigid-ion model.
* :data:`TOSI_FUMI_NACL` — its published parameters, converted to eV and Å.
* :data:`NACL_QEQ` — per-species electronegativity, hardness and Gaussian width of a
  simple charge-equilibration NaCl (a toy that exercises :func:`jaxlr.md.qeq_nve`).
* :func:`molten_nacl` — an ``ase.Atoms`` box of Na⁺/Cl⁻ at the density of liquid NaCl.

Species are indexed 0 = Na, 1 = Cl throughout.  Box, coordinate, neighbour-list and
overflow conventions are those of :func:`jaxlr.md.coulomb_neighbor_list` (jax-md box:
columns are lattice vectors; fractional positions by default).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..system import is_concrete, pair_displacements
from ._space import Geometry, make_geometry

__all__ = ["NACL_QEQ", "TOSI_FUMI_NACL", "NaClQeqParams", "TosiFumiEnergy", "TosiFumiParams", "molten_nacl",
           "tosi_fumi_neighbor_list", "tosi_fumi_pair"]

#: 10⁻¹⁹ J in eV (the elementary charge is exact in the SI since 2019).  Tosi & Fumi give
#: b in 10⁻¹² erg = 10⁻¹⁹ J, C in 10⁻⁶⁰ erg cm⁶ = 10⁻¹⁹ J Å⁶ and D in 10⁻⁷⁶ erg cm⁸ =
#: 10⁻¹⁹ J Å⁸, so one factor converts all three.
_E19_J_IN_EV = 1.0 / 1.602176634


class TosiFumiParams(NamedTuple):
    """Born–Mayer–Huggins pair parameters φ_ij(r) = A_ij e^{(σ_ij − r)/ρ} − C_ij/r⁶ − D_ij/r⁸.

    All (2, 2) tables are indexed by species (0 = Na, 1 = Cl) and symmetric.

    Attributes:
      A: (2, 2) A_ij = β_ij b in eV (Pauling factor β_ij times the common b).
      rho: ρ in Å (one value for all pairs).
      sigma: (2, 2) σ_ij = σ_i + σ_j in Å (sums of the "ionic radii").
      C: (2, 2) dipole–dipole dispersion coefficients in eV·Å⁶.
      D: (2, 2) dipole–quadrupole dispersion coefficients in eV·Å⁸.
      charges: (2,) formal charges in e (+1, −1).
      masses: (2,) masses in amu (Na, Cl; IUPAC standard atomic weights as in ASE).
    """

    A: tuple
    rho: float
    sigma: tuple
    C: tuple
    D: tuple
    charges: tuple = (1.0, -1.0)
    masses: tuple = (22.98976928, 35.45)


def _tosi_fumi_nacl() -> TosiFumiParams:
    b = 0.338 * _E19_J_IN_EV                                  # 0.338e-12 erg
    beta = ((1.25, 1.0), (1.0, 0.75))                         # 1 + z_i/n_i + z_j/n_j, n_Na = n_Cl = 8
    radius = (1.170, 1.585)                                   # Å
    c = ((1.68, 11.2), (11.2, 116.0))                         # 10⁻⁶⁰ erg cm⁶
    d = ((0.8, 13.9), (13.9, 233.0))                          # 10⁻⁷⁶ erg cm⁸
    return TosiFumiParams(
        A=tuple(tuple(b * beta[i][j] for j in range(2)) for i in range(2)),
        rho=0.317,
        sigma=tuple(tuple(radius[i] + radius[j] for j in range(2)) for i in range(2)),
        C=tuple(tuple(c[i][j] * _E19_J_IN_EV for j in range(2)) for i in range(2)),
        D=tuple(tuple(d[i][j] * _E19_J_IN_EV for j in range(2)) for i in range(2)),
    )


#: Tosi–Fumi parameters of NaCl in eV and Å.  Source: M.P. Tosi and F.G. Fumi, J. Phys.
#: Chem. Solids 25, 45 (1964), with the dispersion coefficients of J.E. Mayer, J. Chem.
#: Phys. 1, 270 (1933) that they adopt: b = 0.338×10⁻¹² erg, ρ = 0.317 Å, σ_Na = 1.170 Å,
#: σ_Cl = 1.585 Å, Pauling factors β_NaNa = 1.25, β_NaCl = 1, β_ClCl = 0.75;
#: C (10⁻⁶⁰ erg cm⁶) = 1.68, 11.2, 116 and D (10⁻⁷⁶ erg cm⁸) = 0.8, 13.9, 233 for
#: Na–Na, Na–Cl, Cl–Cl.  In kJ/mol this is the table of Anwar, Frenkel & Noro, J. Chem.
#: Phys. 118, 728 (2003): A_NaCl = 20.3548 kJ/mol, C_NaCl = 674.479 kJ/mol Å⁶, …
TOSI_FUMI_NACL = _tosi_fumi_nacl()


class NaClQeqParams(NamedTuple):
    """Per-species charge-equilibration parameters (index 0 = Na, 1 = Cl).

    Attributes:
      electronegativity: (2,) χ in eV/e (= V).
      hardness: (2,) J in eV/e² (= V/e), the q² coefficient ``½ J q²``.
      sigma: (2,) Gaussian charge widths in Å.
    """

    electronegativity: tuple
    hardness: tuple
    sigma: tuple


def _nacl_qeq() -> NaClQeqParams:
    chi = (2.843, 8.564)                      # Rappé & Goddard (1991), Table I, eV
    idempotential = (4.592, 9.892)            # J⁰ = IP − EA, eV
    return NaClQeqParams(electronegativity=chi, hardness=tuple(0.5 * j for j in idempotential), sigma=(1.0, 1.0))


#: A toy charge-equilibration model of NaCl, for exercising :func:`jaxlr.md.qeq_nve`, not
#: for physics.  Electronegativity χ and idempotential J⁰ of Na and Cl from A.K. Rappé and
#: W.A. Goddard III, J. Phys. Chem. 95, 3358 (1991), Table I (Na: χ = 2.843 eV,
#: J⁰ = 4.592 eV; Cl: χ = 8.564 eV, J⁰ = 9.892 eV); ``hardness = J⁰/2`` and Gaussian
#: widths σ = 1 Å for both ions, chosen (not fitted) so that the charges come out near
#: ±0.65 e in the melt and the Gaussians stay narrow enough for a ~9 Å real-space cutoff.
#: jaxlr's Qeq energy Σ (χ q + ½ J q²) + E_coul(q; σ) includes the Gaussian self-energy
#: k_e q²/(2√π σ), so an isolated ion's curvature is J⁰/2 + k_e/(√π σ), not J⁰: this is
#: not Rappé–Goddard QEq, only numbers of the right size.
NACL_QEQ = _nacl_qeq()


def tosi_fumi_pair(r, species_i, species_j, params: TosiFumiParams = TOSI_FUMI_NACL):
    """Tosi–Fumi pair energy φ_ij(r) = A_ij e^{(σ_ij − r)/ρ} − C_ij/r⁶ − D_ij/r⁸ (eV), no cutoff.

    Args:
      r: distances in Å (any shape, > 0).  species_i, species_j: integer species (0 = Na,
        1 = Cl), broadcastable against ``r``.  params: a :class:`TosiFumiParams`.

    Returns:
      Pair energies in eV, the shape of ``r`` (jittable, differentiable in ``r``).

    Example:
      >>> from jaxlr.md import tosi_fumi_pair
      >>> round(float(tosi_fumi_pair(2.8, 0, 1)), 4)       # Na–Cl near contact, eV
      0.1662
    """
    A, sigma, C, D = (jnp.asarray(x) for x in (params.A, params.sigma, params.C, params.D))
    r = jnp.asarray(r)
    si = jnp.asarray(species_i)
    sj = jnp.asarray(species_j)
    dtype = jnp.result_type(r.dtype, jnp.float32)
    r = r.astype(dtype)
    inv2 = 1.0 / (r * r)
    inv6 = inv2 * inv2 * inv2
    return (A[si, sj].astype(dtype) * jnp.exp((sigma[si, sj].astype(dtype) - r) / params.rho)
            - C[si, sj].astype(dtype) * inv6 - D[si, sj].astype(dtype) * inv6 * inv2)


def _check_params(params) -> TosiFumiParams:
    if not isinstance(params, TosiFumiParams):
        raise ValueError(f"params must be a jaxlr.md.TosiFumiParams (e.g. TOSI_FUMI_NACL), got "
                         f"{type(params).__name__}.")
    for name in ("A", "sigma", "C", "D"):
        t = np.asarray(getattr(params, name), dtype=np.float64)
        if t.shape != (2, 2) or not np.all(np.isfinite(t)) or not np.allclose(t, t.T):
            raise ValueError(f"params.{name} must be a finite, symmetric (2, 2) table (species 0 = Na, 1 = Cl).")
    if not (np.isfinite(params.rho) and params.rho > 0):
        raise ValueError(f"params.rho must be > 0 (Å), got {params.rho!r}.")
    return params


class TosiFumiEnergy:
    """The jittable energy function of :func:`tosi_fumi_neighbor_list` (a callable object).

    ``energy_fn(R, neighbor, *, box=None, perturbation=None)`` → the short-range energy
    ½ Σ_i Σ_{j≠i, r_ij < r_cutoff} φ_{s_i s_j}(r_ij) in eV.

    Attributes:
      params: the :class:`TosiFumiParams`.  species: (N,) int32 (0 = Na, 1 = Cl).
      r_cutoff: the truncation distance (Å).  fractional_coordinates: as the space.
    """

    def __init__(self, geometry: Geometry, params: TosiFumiParams, species):
        self._geometry = geometry
        self.params = params
        self.species = species

    @property
    def r_cutoff(self) -> float:
        return self._geometry.cutoff

    @property
    def fractional_coordinates(self) -> bool:
        return self._geometry.fractional

    def __call__(self, R, neighbor=None, *, box=None, perturbation=None, **kwargs):
        if kwargs:
            raise ValueError(f"unknown keyword argument(s) {sorted(kwargs)}; the Tosi–Fumi energy takes neighbor=, "
                             "box= and perturbation=.")
        r, nbrs = neighbor_distances(self._geometry, R, neighbor, box, perturbation)
        s = self.species
        phi = tosi_fumi_pair(r, s[:, None], s[nbrs.idx], self.params)
        return 0.5 * jnp.sum(jnp.where(nbrs.mask, phi, 0.0))


def neighbor_distances(geometry: Geometry, R, neighbor, box, perturbation):
    """Pair distances ``r`` (N, M) Å over a jax-md neighbour list and the masked list.

    Pairs beyond the geometry's cutoff and padded slots are masked (``nbrs.mask``); their
    ``r`` is 1 so that nothing downstream divides by zero.
    """
    R_real, cell = geometry.real(R, box, perturbation)
    nbrs = geometry.neighbors(neighbor, R_real, cell)   # pairs beyond the cutoff are masked
    n = R_real.shape[0]
    d, _ = pair_displacements(R_real, cell, jnp.arange(n), nbrs.idx, None)
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    return jnp.sqrt(jnp.where(nbrs.mask, r2, 1.0)), nbrs   # padded slots (j = i, r = 0) never reach sqrt


def tosi_fumi_neighbor_list(displacement_fn, box, species, *, r_cutoff: float = 9.0,
                            fractional_coordinates: bool = True, dr_threshold: float = 0.5,
                            capacity_multiplier: float = 1.25, format=None,
                            params: TosiFumiParams = TOSI_FUMI_NACL):
    """Tosi–Fumi (Born–Mayer–Huggins) short range of NaCl in the jax-md idiom: ``neighbor_fn, energy_fn``.

    .. math::

        E = ½ Σ_i Σ_{j≠i, r_ij < r_c} [A_ij e^{(σ_ij − r_ij)/ρ} − C_ij/r_ij⁶ − D_ij/r_ij⁸]

    with :data:`TOSI_FUMI_NACL` (Tosi & Fumi 1964; eV, Å).  The sum is a plain truncation
    at ``r_cutoff``: no switching function, no energy shift, no long-range dispersion
    correction (as an OpenMM ``CustomNonbondedForce`` with a cutoff and neither switching
    nor long-range correction computes it).  The Coulomb part of the rigid-ion model is a
    separate :func:`jaxlr.md.coulomb_neighbor_list` with charges ±1 (``params.charges``).
    Box, coordinate, neighbour-list and overflow conventions are those of
    :func:`jaxlr.md.coulomb_neighbor_list`.

    Args:
      displacement_fn: from ``jax_md.space.periodic_general(box, fractional_coordinates=…)``.
      box: the jax-md box (Å; columns are lattice vectors), concrete.
      species: (N,) integers, 0 = Na, 1 = Cl.
      r_cutoff: truncation distance (Å); ``r_cutoff + dr_threshold`` must fit in half
        the smallest width of the box (minimum image).
      fractional_coordinates, dr_threshold, capacity_multiplier, format: as
        :func:`jaxlr.md.coulomb_neighbor_list` (``Dense`` lists only).
      params: a :class:`TosiFumiParams` (default :data:`TOSI_FUMI_NACL`).

    Returns:
      ``(neighbor_fn, energy_fn)``: a jax-md ``NeighborListFns`` (cutoff ``r_cutoff`` plus
      the skin) and a :class:`TosiFumiEnergy`,
      ``energy_fn(R, neighbor, *, box=None, perturbation=None)`` → energy (eV), jittable;
      ``-grad`` gives forces in eV/Å, ``jax_md.quantity.stress`` / ``pressure`` work
      (``perturbation`` strains positions and cell, ``box=`` rescales fractional positions).

    Raises:
      ValueError: species not (N,) integers in {0, 1}, r_cutoff ≤ 0, r_cutoff plus skin
        beyond half the box, a box/coordinate mismatch with ``displacement_fn``, a Sparse
        format, bad ``params``; at call time as :func:`jaxlr.md.coulomb_neighbor_list`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jax_md import space
      >>> from jaxlr.md import molten_nacl, tosi_fumi_neighbor_list
      >>> atoms = molten_nacl(64)                               # 12.6 Å cube
      >>> box = jnp.asarray(atoms.cell.array.T)                 # jax-md: columns
      >>> R = jnp.asarray(atoms.get_scaled_positions())         # fractional
      >>> species = (atoms.numbers == 17).astype(int)           # 0 = Na, 1 = Cl
      >>> displacement, shift = space.periodic_general(box)
      >>> neighbor_fn, energy_fn = tosi_fumi_neighbor_list(displacement, box, species, r_cutoff=5.5)
      >>> nbrs = neighbor_fn.allocate(R)
      >>> forces = -jax.grad(energy_fn)(R, nbrs)                # eV/Å
      >>> forces.shape, float(energy_fn(R, nbrs)) > 0
      ((64, 3), True)
    """
    from jax_md import partition

    if format is None:
        format = partition.Dense
    params = _check_params(params)
    if not is_concrete(species):
        raise ValueError("species must be concrete (numbers, not a tracer) when the energy function is built.")
    s = np.asarray(species)
    if s.ndim != 1 or s.size == 0 or not (np.issubdtype(s.dtype, np.integer) or s.dtype == bool):
        raise ValueError(f"species must be an (N,) integer array (0 = Na, 1 = Cl), got shape {s.shape} and dtype "
                         f"{s.dtype}.")
    if np.any((s != 0) & (s != 1)):
        raise ValueError(f"species must be 0 (Na) or 1 (Cl), got values {sorted(set(s.tolist()) - {0, 1})[:5]}; "
                         "from atomic numbers: species = (numbers == 17).astype(int).")
    try:
        rc = float(r_cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"r_cutoff must be a positive number (Å), got {r_cutoff!r}.") from None
    if not (np.isfinite(rc) and rc > 0):
        raise ValueError(f"r_cutoff must be > 0 (Å), got {r_cutoff!r}.")
    if box is None:
        raise ValueError("tosi_fumi_neighbor_list needs a periodic box (the molten salt is a bulk liquid).")
    geometry = make_geometry(displacement_fn, box, cutoff=rc, n_atoms=int(s.size),
                             fractional_coordinates=fractional_coordinates, dr_threshold=dr_threshold,
                             capacity_multiplier=capacity_multiplier, format=format, what="r_cutoff")
    energy_fn = TosiFumiEnergy(geometry, params, jnp.asarray(s.astype(np.int32)))
    return geometry.neighbor_fn, energy_fn


#: g/mol of NaCl (IUPAC standard atomic weights, as ASE)
_NACL_MOLAR_MASS = 22.98976928 + 35.45
_AVOGADRO = 6.02214076e23


def molten_nacl(n_ions: int, *, density_g_cm3: float = 1.556, seed: int = 0, jitter: float = 0.1):
    """A cubic box of Na⁺/Cl⁻ ions at a given mass density, ready to melt: ``ase.Atoms``.

    The ions sit on a simple cubic lattice of k³ sites (k the smallest even integer with
    k³ ≥ n_ions) with alternating species — the rock-salt structure, scaled so that the
    box holds ``n_ions`` ions at ``density_g_cm3``.  When k³ > n_ions, k³ − n_ions sites
    (equally many of each species) are left empty at random; every site is displaced by
    a Gaussian of standard deviation ``jitter`` Å per axis.  Melting it (e.g. a few ps at
    1,200 K) gives the liquid.

    The default density, 1.556 g/cm³, is that of liquid NaCl at its melting point
    (1,074 K); G.J. Janz, J. Phys. Chem. Ref. Data 17, Suppl. 2 (1988):
    ρ = 2.1389 − 5.43×10⁻⁴ T/K g/cm³, i.e. 1.487 g/cm³ at 1,200 K.

    Args:
      n_ions: number of ions, even and ≥ 2 (half Na, half Cl).
      density_g_cm3: mass density in g/cm³ (> 0).
      seed: seed of the random vacancies and displacements.
      jitter: standard deviation of the random displacements, Å (≥ 0).

    Returns:
      ``ase.Atoms`` with a cubic cell (rows are lattice vectors, Å), ``pbc=True``, symbols
      Na/Cl (species index 0 = Na, 1 = Cl is ``(atoms.numbers == 17).astype(int)``),
      positions wrapped into the cell and ``initial_charges`` +1 (Na) and −1 (Cl).  ASE's
      default masses (amu).  For jax-md: ``box = atoms.cell.array.T`` and fractional
      positions ``atoms.get_scaled_positions()``.

    Raises:
      ValueError: an odd or too small ``n_ions``, a non-positive density, a negative jitter.

    Example:
      >>> from jaxlr.md import molten_nacl
      >>> atoms = molten_nacl(512)
      >>> len(atoms), round(float(atoms.cell[0, 0]), 2), float(atoms.get_initial_charges().sum())
      (512, 25.18, 0.0)
    """
    import ase

    try:
        n = int(n_ions)
    except (TypeError, ValueError):
        raise ValueError(f"n_ions must be an even integer ≥ 2, got {n_ions!r}.") from None
    if n != n_ions or n < 2 or n % 2:
        raise ValueError(f"n_ions must be an even integer ≥ 2 (half Na, half Cl), got {n_ions!r}.")
    rho = float(density_g_cm3)
    if not (np.isfinite(rho) and rho > 0):
        raise ValueError(f"density_g_cm3 must be > 0, got {density_g_cm3!r}.")
    jitter = float(jitter)
    if not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be ≥ 0 (Å), got {jitter!r}.")
    volume = (n // 2) * _NACL_MOLAR_MASS / _AVOGADRO / rho * 1e24      # Å³
    length = volume ** (1.0 / 3.0)
    k = int(np.ceil(n ** (1.0 / 3.0) - 1e-9))
    k += k % 2
    grid = np.stack(np.meshgrid(*(np.arange(k),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    parity = grid.sum(axis=1) % 2                        # 0: Na, 1: Cl (rock salt)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([np.sort(rng.choice(np.flatnonzero(parity == p), n // 2, replace=False))
                           for p in (0, 1)])
    species = parity[keep]
    positions = (grid[keep] + 0.5) * (length / k) + rng.normal(scale=jitter, size=(n, 3))
    atoms = ase.Atoms(numbers=np.where(species == 0, 11, 17), positions=positions, cell=np.eye(3) * length,
                      pbc=True)
    atoms.wrap()
    atoms.set_initial_charges(np.where(species == 0, 1.0, -1.0))
    return atoms
