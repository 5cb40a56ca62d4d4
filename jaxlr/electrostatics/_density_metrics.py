"""How close two s + p Gaussian densities are, electrostatically (open boundary).

Two measures of a density error Δρ = ρ_a − ρ_b, both independent of how each density is
expanded (the two bases may differ in widths and in the number of functions):

* :func:`coulomb_metric` — ``½ (Δρ | Δρ) = ½ KE ∫∫ Δρ(r) Δρ(r') / |r − r'|`` (eV), the
  electrostatic energy of the error.  Directions of coefficient space that change no
  potential cost nothing; directions that move charge cost what they cost physically.  This
  is the metric in which the reference coefficients are fitted, so it is the loss a density
  model should be trained with (the SALTED choice), not a raw mean square.
* :func:`density_esp` — the electrostatic potential of a density at given points (V, i.e.
  eV/e); with :func:`jaxlr.system.merz_kollman_points` it gives the RMS error of the
  potential on molecular-surface shells, the usual judge of partial charges and fitted
  densities.

Basis conventions as :mod:`jaxlr.electrostatics` (``_gaussian_multipoles``): per atom
``[c_s1 … c_sns, μ_1x, μ_1y, μ_1z, …]``, s functions of unit charge, p functions of unit
dipole, widths σ (Å) per shell.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..units import KE
from ._gaussian_multipoles import basis_shells, pair_blocks

__all__ = ["coulomb_metric", "density_esp", "density_overlap"]


def _masked(coefficients, active):
    if active is None:
        return coefficients
    return jnp.where(jnp.asarray(active)[:, None], coefficients, 0.0)


def density_overlap(positions, coefficients_a, sigma_s_a, sigma_p_a, coefficients_b, sigma_s_b, sigma_p_b, *,
                    active=None):
    """Coulomb overlap ``(ρ_a | ρ_b) = KE ∫∫ ρ_a(r) ρ_b(r')/|r − r'|`` of two densities (eV).

    Both densities sit on the same atoms, each in its own s + p basis.

    Args:
      positions: (N, 3) Å.
      coefficients_a: (N, n_s_a + 3 n_p_a) e and e·Å.  sigma_s_a: (N, n_s_a) Å.
      sigma_p_a: (N, n_p_a) Å.  coefficients_b, sigma_s_b, sigma_p_b: likewise for ρ_b.
      active: (N,) bool or None; inactive (padding) atoms carry no density.

    Returns:
      scalar (eV/e² × e² = eV).  Symmetric in a and b; jittable and differentiable.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.units import KE
      >>> R = jnp.array([[0.0, 0, 0], [3.0, 0, 0]])
      >>> c = jnp.array([[1.0], [-1.0]]); s = jnp.full((2, 1), 0.1); p = jnp.zeros((2, 0))
      >>> e = density_overlap(R, c, s, p, c, s, p)   # twice the (self + pair) Coulomb energy
      >>> bool(abs(e - (2 * KE / (jnp.sqrt(jnp.pi) * 0.1) - 2 * KE / 3.0)) < 1e-6 * abs(e))
      True
    """
    positions = jnp.asarray(positions)
    ca = _masked(jnp.asarray(coefficients_a), active)
    cb = _masked(jnp.asarray(coefficients_b), active)
    shells_a = basis_shells(jnp.asarray(sigma_s_a), jnp.asarray(sigma_p_a))
    shells_b = basis_shells(jnp.asarray(sigma_s_b), jnp.asarray(sigma_p_b))
    ns_a, ns_b = jnp.shape(sigma_s_a)[1], jnp.shape(sigma_s_b)[1]
    d = positions[None, :, :] - positions[:, None, :]                              # (N, N, 3): R_j − R_i
    blocks = pair_blocks(d, shells_a[:, None, :], shells_b[None, :, :], ns_a, ns_b)  # (N, N, nb_a, nb_b)
    return KE * jnp.einsum("ix,ijxy,jy->", ca, blocks, cb)


def coulomb_metric(positions, coefficients_a, sigma_s_a, sigma_p_a, coefficients_b, sigma_s_b, sigma_p_b, *,
                   active=None):
    """Electrostatic energy of the difference of two densities, ``½ (ρ_a − ρ_b | ρ_a − ρ_b)`` (eV).

    Non-negative, zero only when the two densities are equal (the Coulomb kernel is
    positive definite), and finite for densities in different bases.  Evaluated as
    ``½ (a|a) − (a|b) + ½ (b|b)`` with every pair of functions (N² blocks; for clusters).

    Args:
      as :func:`density_overlap`.

    Returns:
      scalar, eV.

    Example:
      >>> import jax.numpy as jnp
      >>> R = jnp.array([[0.0, 0, 0], [0.96, 0, 0]])
      >>> c = jnp.array([[-0.8, 0.0, 0.0, 0.1], [0.8, 0.0, 0.0, 0.0]])   # one s, one p per atom
      >>> s = jnp.full((2, 1), 0.4); p = jnp.full((2, 1), 0.5)
      >>> float(coulomb_metric(R, c, s, p, c, s, p))                    # same density
      0.0
      >>> bool(coulomb_metric(R, c, s, p, 0.9 * c, s, p) > 0)
      True
    """
    aa = density_overlap(positions, coefficients_a, sigma_s_a, sigma_p_a, coefficients_a, sigma_s_a, sigma_p_a,
                         active=active)
    ab = density_overlap(positions, coefficients_a, sigma_s_a, sigma_p_a, coefficients_b, sigma_s_b, sigma_p_b,
                         active=active)
    bb = density_overlap(positions, coefficients_b, sigma_s_b, sigma_p_b, coefficients_b, sigma_s_b, sigma_p_b,
                         active=active)
    return jnp.maximum(0.5 * aa - ab + 0.5 * bb, 0.0)


def density_esp(points, positions, coefficients, sigma_s, sigma_p, *, active=None):
    """Electrostatic potential of an s + p Gaussian density at points (V = eV/e).

    ``V(x) = KE ∫ ρ(r)/|x − r| d³r`` with ``ρ = Σ c·basis``; for an s function of charge q
    and width σ at distance r this is ``KE q erf(r/(√2 σ))/r``, for a p function the
    potential of a Gaussian-smeared dipole.  Divide by 27.211386245988 for Hartree/e.

    Args:
      points: (M, 3) Å.  positions: (N, 3) Å.  coefficients: (N, n_s + 3 n_p).
      sigma_s: (N, n_s) Å.  sigma_p: (N, n_p) Å.  active: (N,) bool or None.

    Returns:
      (M,) potential in V.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.units import KE
      >>> v = density_esp(jnp.array([[0.0, 0, 4.0]]), jnp.zeros((1, 3)), jnp.array([[1.0]]),
      ...                 jnp.array([[0.3]]), jnp.zeros((1, 0)))
      >>> bool(abs(v[0] - KE / 4.0) < 1e-9)     # a compact charge looks like a point charge
      True
    """
    positions = jnp.asarray(positions)
    points = jnp.asarray(points, dtype=positions.dtype)
    c = _masked(jnp.asarray(coefficients), active)
    shells = basis_shells(jnp.asarray(sigma_s), jnp.asarray(sigma_p))
    ns = jnp.shape(sigma_s)[1]
    d = points[None, :, :] - positions[:, None, :]                                 # (N, M, 3)
    probe = jnp.zeros(points.shape[:1] + (1,), positions.dtype)                   # a point charge
    blocks = pair_blocks(d, shells[:, None, :], probe[None, :, :], ns, 1)          # (N, M, nb, 1)
    return KE * jnp.einsum("nx,nmx->m", c, blocks[..., 0])
