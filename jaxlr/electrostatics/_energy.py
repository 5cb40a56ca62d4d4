"""The Coulomb front door: energies, potentials, forces and stress of point or Gaussian charges.

Two layers:

* :func:`coulomb_energy` — the pure, jittable functional core.  Given static choices
  (method, mesh, k-vectors, background) and traced arrays (positions, charges, cell,
  widths σ, smearing s), it returns the total electrostatic energy.  Everything else
  (potentials, forces, stress, hyperparameter gradients, second derivatives) follows by
  ``jax.grad``; :func:`coulomb_terms` packages the usual derivatives.
* :func:`coulomb` — the eager front door: validates inputs, tunes parameters from a
  requested accuracy, builds the neighbour list on the host, and calls the jitted core.

Energy conventions (DESIGN.md): ``E = ½ Σ_i Σ_j' q_i q_j KE K(r_ij)`` over all pairs
(and periodic images) plus, for Gaussian charges, each Gaussian's self-energy
``KE q_i²/(2√π σ_i)``.  Periodic sums are Ewald sums with tin-foil boundary conditions.
A net charge in a periodic cell needs ``background=True`` (uniform neutralising
background, i.e. the k = 0 term omitted).  Potentials are the physical ones,
``φ_i = ∂E/∂q_i`` (so ``E = ½ Σ q_i φ_i`` for point charges) — peers that report
``E = Σ q_i φ_i`` carry a factor ½ in theirs.  Stress is ``(1/V) ∂E/∂ε`` (ASE sign).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..system._deprecation import renamed_keyword
from ..units import KE
from ._ewald import ewald_reciprocal_energy
from ._kernels import self_kernel
from ._pme import MeshSpec, pme_reciprocal_energy
from ._realspace import real_space_energy

__all__ = ['coulomb_energy', 'long_range_energy', 'coulomb_terms']


def coulomb_energy(positions, charges, *, cell=None, sigma=None, smearing=None, neighbors=None,
                   kvectors=None, method: str = "pme", mesh: MeshSpec | None = None,
                   background: bool = False):
    """Total electrostatic energy (eV) — the pure, jittable functional core.

    Args:
      positions: (N, 3) Å.  charges: (N,) e.
      cell: (3, 3) Å, rows are lattice vectors; None for an open boundary.
      sigma: (N,) Gaussian widths σ_i in Å, or None for point charges.
      smearing: Ewald smearing s in Å (periodic methods); traced, so ∂E/∂s is available
        (it is zero up to the method's accuracy — a useful check).
      neighbors: :class:`jaxlr.Neighbors` full list with cutoff ≥ the real-space range;
        for ``method="direct"`` None means all pairs.
      kvectors: (n_chunks, chunk, 3) integer-valued half-space k-vectors for "ewald"
        (:func:`jaxlr.electrostatics.half_space_kvectors`).
      method: "direct", "ewald" or "pme" (static).  mesh: MeshSpec for "pme" (static).
      background: add the uniform neutralising background (static).

    Returns:
      scalar energy (eV).  Forces: ``-jax.grad(coulomb_energy)(positions, ...)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> R = jnp.array([[0.0, 0, 0], [1.0, 0, 0]]); q = jnp.array([1.0, -1.0])
      >>> round(float(coulomb_energy(R, q, method="direct")), 4)  # -KE / 1 Å
      -14.3996
    """
    if method == "direct":
        energy = real_space_energy(positions, charges, sigma, None, None, neighbors)
    else:
        if cell is None:
            raise ValueError(f"method={method!r} needs a periodic cell; use method='direct' for an open boundary.")
        smearing = jnp.asarray(smearing, positions.dtype)
        energy = real_space_energy(positions, charges, sigma, cell, smearing, neighbors)
    return energy + long_range_energy(positions, charges, cell=cell, sigma=sigma, smearing=smearing,
                                      kvectors=kvectors, method=method, mesh=mesh, background=background)


def long_range_energy(positions, charges, *, cell=None, sigma=None, smearing=None, kvectors=None,
                      method: str = "pme", mesh: MeshSpec | None = None, background: bool = False):
    """Everything in :func:`coulomb_energy` except the real-space pair sum (eV, jittable).

    Self-energies (Gaussian and Ewald), the reciprocal sum ("ewald" or "pme") and the
    neutralising background.  Solvers that apply the Coulomb operator many times at fixed
    positions (Qeq) cache the real-space pair kernels and add this part's potentials.
    Arguments, shapes and units as :func:`coulomb_energy`; returns a scalar in eV.

    Example:
      >>> import jax.numpy as jnp
      >>> R = jnp.zeros((1, 3)); q = jnp.ones(1); s = jnp.ones(1)
      >>> round(float(long_range_energy(R, q, sigma=s, method="direct")), 6)   # KE/(2√π σ)
      4.062065
    """
    dtype = positions.dtype
    if method == "direct":
        if sigma is None:
            return jnp.zeros((), dtype)
        return 0.5 * KE * jnp.sum(charges**2 * self_kernel(sigma, None, dtype))
    smearing = jnp.asarray(smearing, dtype)
    energy = 0.5 * KE * jnp.sum(charges**2 * self_kernel(sigma, smearing, dtype))
    if method == "ewald":
        energy = energy + ewald_reciprocal_energy(positions, charges, cell, smearing, kvectors)
    elif method == "pme":
        energy = energy + pme_reciprocal_energy(positions, charges, cell, smearing, mesh)
    else:
        raise ValueError(f"unknown method {method!r}; choose 'direct', 'ewald' or 'pme'.")
    if background:
        volume = jnp.abs(jnp.linalg.det(cell))
        total = jnp.sum(charges)
        # the k = 0 component that the real-space lattice sum contains: ∫ erfc(r/√2s)/r d³r = 2πs²,
        # and −2πγ_ij² for the Gaussian correction (Σ_ij q_i q_j γ_ij² = 2 Q Σ_i q_i σ_i²)
        k0 = total**2 * smearing**2
        if sigma is not None:
            k0 = k0 - 2.0 * total * jnp.sum(charges * sigma**2)
        energy = energy - math.pi * KE * k0 / volume
    return energy


def coulomb_terms(positions, charges, *, cell=None, stress: bool = True, want_stress: bool | None = None, **kwargs):
    """Energy, potentials, forces and (periodic) stress from :func:`coulomb_energy` (jittable).

    Returns ``(energy, potentials (N,), forces (N, 3), stress (3, 3) or None)``; the
    keyword arguments are those of :func:`coulomb_energy`.  One forward pass and one
    cheap transposition: the custom derivative rules reuse the mesh potential and the
    pair kernels, so this costs little more than the energy alone.
    """
    stress = renamed_keyword("want_stress", "stress", want_stress, stress, default=True, where="coulomb_terms")
    periodic = cell is not None
    if periodic and stress:
        def f(r, q, c):
            return coulomb_energy(r, q, cell=c, **kwargs)
        energy, (g_r, g_q, g_c) = jax.value_and_grad(f, argnums=(0, 1, 2))(positions, charges, cell)
        volume = jnp.abs(jnp.linalg.det(cell))
        stress = (positions.T @ g_r + cell.T @ g_c) / volume
    else:
        def f(r, q):
            return coulomb_energy(r, q, cell=cell, **kwargs)
        energy, (g_r, g_q) = jax.value_and_grad(f, argnums=(0, 1))(positions, charges)
        stress = None
    return energy, g_q, -g_r, stress
