"""Projection of a charge density onto the density-coefficient basis (Coulomb metric).

Reference coefficients for the multipolar charge equilibration of :mod:`jaxlr.equilibration`
come from quantum chemistry.  Given a density ρ, the coefficients c that minimise the
Coulomb energy of the residual ρ − ρ_fit solve ``C c = v``, where C is the basis's Coulomb
matrix and ``v_x = KE (b_x | 1/r | ρ)`` — the standard density-fitting criterion (Dunlap;
Vahtras, Almlöf & Feyereisen).  The basis, widths and normalisation are those of
:class:`jaxlr.GaussianBasis` and :mod:`jaxlr.electrostatics`.

* :func:`fit_density` — the jittable core, given the right-hand side v;
* :func:`project_density` — the eager front door: a density given as Gaussians
  (:class:`GaussianDensity`, exact v and the residual energy) or v computed elsewhere
  (e.g. PySCF three-centre integrals, ``notebooks/05_density_projection_pyscf.ipynb``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._gaussian_multipoles import density_potentials, multipole_matrix, pair_blocks
from ..system._checks import check_positions, concrete_value
from ..units import KE
from ._density import GaussianBasis, check_finite, check_shape, per_atom_widths, s_slots, validated_widths
from ._solvers import solve_dense, spd_solve

__all__ = ["GaussianDensity", "ProjectionResult", "fit_density", "project_density"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianDensity:
    """A charge density given as s and p Gaussians (a pytree), in :mod:`jaxlr.electrostatics` normalisation.

    ``ρ(r) = Σ_m q_m g_{w_m}(r − X_m) + μ_m·p_{w_m}(r − X_m)``.

    Attributes:
      centres: (M, 3) Å.  widths: (M,) Å > 0.  charges: (M,) e.
      dipoles: (M, 3) e·Å or None.
    """

    centres: jax.Array
    widths: jax.Array
    charges: jax.Array
    dipoles: jax.Array | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProjectionResult:
    """Output of :func:`project_density` (a pytree).

    Attributes:
      coefficients: (N, n_basis) fitted coefficients (e, e·Å).
      charges: (N,) e.  dipoles: (N, 3) e·Å.  total_dipole: (3,) Σ q_i R_i + μ_i.
      error: () Coulomb energy ½ KE (ρ − ρ_fit | ρ − ρ_fit) of the fit residual (eV) when
        the density was given as Gaussians, else None.
    """

    coefficients: jax.Array
    charges: jax.Array
    dipoles: jax.Array
    total_dipole: jax.Array
    error: jax.Array | None = None


def fit_density(positions, sigma_s, sigma_p, rhs, *, active=None, total_charge=None):
    """Coulomb-metric fit: minimise ``½ cᵀ C c − vᵀ c`` (s.t. Σ c_s = Q if given) — jittable core.

    Args:
      positions: (N, 3) Å; sigma_s (N, n_s), sigma_p (N, n_p) widths (Å).
      rhs: (N, n_basis) ``v = KE (basis | 1/r | ρ)`` in eV/e (:func:`jaxlr.electrostatics.density_potentials`).
      active: (N, n_basis) used slots (default all).
      total_charge: scalar Q (e) to impose ``Σ c_s = Q`` exactly, or None (unconstrained,
        ``C c = v``).

    Returns:
      coefficients (N, n_basis).  Minimising the Coulomb energy of ρ − ρ_fit is the
      standard density-fitting criterion (Dunlap; Vahtras, Almlöf & Feyereisen).
    """
    n, ns = sigma_s.shape
    n_p = sigma_p.shape[1]
    nb = ns + 3 * n_p
    dtype = positions.dtype
    active = jnp.ones((n, nb), bool) if active is None else jnp.asarray(active, bool)
    flat = active.reshape(-1)
    coul = multipole_matrix(positions, sigma_s, sigma_p)
    coul = jnp.where(flat[:, None] & flat[None, :], coul, jnp.diag(jnp.where(flat, 0.0, 1.0)))
    v = jnp.where(active, rhs, 0.0).reshape(-1)
    if total_charge is None:
        x = spd_solve(coul, v)
    else:
        s_active = active & jnp.asarray(s_slots(ns, n_p))[None, :]
        constraint = s_active.reshape(-1, 1).astype(dtype)
        x, _, _ = solve_dense(coul, v, constraint, jnp.reshape(jnp.asarray(total_charge, dtype), (1,)))
    return x.reshape(n, nb)


def project_density(positions, species, *, basis: GaussianBasis, density: GaussianDensity | None = None,
                    rhs=None, total_charge=None, widths=None) -> ProjectionResult:
    """Project a charge density onto the basis in the Coulomb metric (open boundary).

    Two entry points:

    * ``density=GaussianDensity(...)`` — a density given as s/p Gaussians (any centres and
      widths, e.g. a promolecule or a density expanded in another Gaussian set); the
      right-hand side ``v`` is computed exactly and ``.error`` reports the Coulomb energy
      of the residual.
    * ``rhs=v`` (N, n_basis) — the Coulomb-metric projections ``v_x = KE (b_x | 1/r | ρ)``
      (eV/e) computed elsewhere, e.g. by PySCF's three-centre integrals contracted with a
      density matrix (``notebooks/05_density_projection_pyscf.ipynb`` shows the unit and
      normalisation conversions: v_x = 27.211386 eV × (χ_x|ρ)/n_x for a PySCF auxiliary
      function χ_x = n_x b_x).

    The fit solves ``C c = v`` with C the basis's Coulomb matrix (:func:`fit_density`); with
    ``total_charge`` the fitted density carries exactly that charge (Σ s coefficients).
    A density that lies in the span of the basis is recovered exactly.

    Args:
      positions: (N, 3) Å.  species: (N,) integers in ``basis``.  basis: :class:`GaussianBasis`.
      density / rhs: exactly one of them.  total_charge: optional exact charge (e).
      widths: optional traced width arrays as in :func:`density_qeq`.

    Returns:
      :class:`ProjectionResult`.

    Example:
      >>> import numpy as np
      >>> from jaxlr.equilibration import GaussianBasis
      >>> from jaxlr.equilibration import GaussianDensity, project_density
      >>> basis = GaussianBasis(species=(1,), s_widths=((0.5, 1.0),), p_widths=((0.7,),))
      >>> R = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
      >>> rho = GaussianDensity(centres=R, widths=np.array([0.5, 1.0]), charges=np.array([1.0, -1.0]))
      >>> fit = project_density(R, np.array([1, 1]), basis=basis, density=rho)
      >>> [round(float(q), 4) for q in fit.charges], float(fit.error) < 1e-5
      ([1.0, -1.0], True)
    """
    if not isinstance(basis, GaussianBasis):
        raise ValueError("basis must be a jaxlr.GaussianBasis.")
    if (density is None) == (rhs is None):
        raise ValueError("pass exactly one of density= (a GaussianDensity) or rhs= (the (N, n_basis) projections).")
    positions = check_positions(positions)
    n = positions.shape[0]
    species_np = concrete_value(species)
    if species_np is None or species_np.shape != (n,):
        raise ValueError(f"species must be concrete integers of shape ({n},).")
    index = basis.index(species_np)
    nb = basis.n_basis
    dtype = positions.dtype if jnp.issubdtype(positions.dtype, jnp.floating) else jnp.zeros(()).dtype
    positions = positions.astype(dtype)
    s_w, p_w = validated_widths(basis, widths, dtype)
    sigma_s, sigma_p, active = per_atom_widths(index, s_w, p_w, basis)
    if total_charge is not None:
        check_shape("total_charge", total_charge, ())
        check_finite("total_charge", total_charge)
    if density is not None:
        if not isinstance(density, GaussianDensity):
            raise ValueError("density must be a jaxlr.GaussianDensity.")
        centres = check_positions(density.centres).astype(dtype)
        m = centres.shape[0]
        check_shape("density.widths", density.widths, (m,))
        check_shape("density.charges", density.charges, (m,))
        w_np = check_finite("density.widths", density.widths)
        if w_np is not None and np.any(w_np <= 0):
            raise ValueError("density.widths must be strictly positive (Å).")
        check_finite("density.charges", density.charges)
        dips = jnp.zeros((m, 3), dtype)   # always an array: one compilation with or without dipoles
        if density.dipoles is not None:
            check_shape("density.dipoles", density.dipoles, (m, 3))
            check_finite("density.dipoles", density.dipoles)
            dips = jnp.asarray(density.dipoles, dtype)
        density = GaussianDensity(centres=centres, widths=jnp.asarray(density.widths, dtype),
                                  charges=jnp.asarray(density.charges, dtype), dipoles=dips)
    else:
        check_shape("rhs", rhs, (n, nb))
        check_finite("rhs", rhs)
        rhs = jnp.asarray(rhs, dtype)
    total = None if total_charge is None else jnp.asarray(total_charge, dtype)
    return _project(positions, sigma_s, sigma_p, jnp.asarray(active), density, rhs, total)


@jax.jit
def _project(positions, sigma_s, sigma_p, active, density, rhs, total_charge):
    n, ns = sigma_s.shape
    self_energy = None
    if density is not None:
        rhs = density_potentials(positions, sigma_s, sigma_p, density.centres, density.widths, density.charges,
                                 density.dipoles)
        self_energy = _gaussian_self_energy(density.centres, density.widths, density.charges, density.dipoles)
    coefficients = fit_density(positions, sigma_s, sigma_p, rhs, active=active, total_charge=total_charge)
    charges = jnp.sum(coefficients[:, :ns], axis=1)
    dipoles = jnp.sum(coefficients[:, ns:].reshape(n, sigma_p.shape[1], 3), axis=1)
    error = None
    if self_energy is not None:
        c = coefficients.reshape(-1)
        coul = multipole_matrix(positions, sigma_s, sigma_p)
        error = self_energy - jnp.vdot(jnp.where(active, rhs, 0.0).reshape(-1), c) + 0.5 * c @ (coul @ c)
    return ProjectionResult(coefficients=coefficients, charges=charges, dipoles=dipoles,
                            total_dipole=charges @ positions + jnp.sum(dipoles, axis=0), error=error)


def _gaussian_self_energy(centres, widths, charges, dipoles):
    """½ KE (ρ|ρ) (eV) of a :class:`GaussianDensity`."""
    shells = jnp.stack([widths, widths], axis=-1)
    d = centres[None, :, :] - centres[:, None, :]
    blocks = pair_blocks(d, shells[:, None, :], shells[None, :, :], 1)            # (M, M, 4, 4)
    dens = jnp.concatenate([charges[:, None], jnp.zeros_like(centres) if dipoles is None else dipoles], axis=1)
    return 0.5 * KE * jnp.einsum("mx,mnxy,ny->", dens, blocks, dens)
