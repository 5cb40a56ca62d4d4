"""Long-range mesh correction of the Jacobi preconditioner for matrix-free Qeq.

Why: the Qeq matrix A = C + diag J of a periodic system has, for a charge wave
``q_i = e^{ik·R_i}``, roughly the eigenvalue ``d + n K̂(k)`` with d the diagonal
(J + KE/(√π σ)), n = N/V the number density and ``K̂(k) = 4π KE e^{−σ²k²}/k²`` the
Fourier transform of the Gaussian-charge kernel.  The smallest k is 2π/L, so the largest
eigenvalues grow like L² ∝ N^{2/3}: with a diagonal preconditioner the CG iteration count
grows with the box.

The correction: on plane waves the ideal preconditioner is 1/(d + nK̂), the diagonal one
1/d; their difference ``−nK̂/(d(d + nK̂))`` is applied through a coarse B-spline mesh,

    Δz = −D⁻¹ Wᵀ F⁻¹[h(k) F[W D⁻¹ r]],    h(k) = (K_tot/V) K̂ d̄ / ((d̄ + nK̂) Û²(k)) · e^{−k²a²/2},

with W the B-spline spreading (Wᵀ the interpolation), Û the spline's Fourier factor,
d̄ the harmonic mean of the diagonal and a the mesh spacing (the taper keeps the correction to the long
wavelengths the mesh resolves).  Density fluctuations of real systems can make the
plane-wave estimate overshoot; a short power iteration bounds the largest eigenvalue of
D^½(−Δ)D^½ by ``CAP`` < 1 and scales h if needed, so M⁻¹ = D⁻¹ + Δ stays positive
definite.  It costs one
spread, one FFT pair and one gather on a mesh of ~2 Å spacing — much less than the PME
matvec — and keeps the iteration count nearly flat as N grows (``benchmarks/bench_qeq.py``).
"""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp

from .pme import MeshSpec, _interpolate, spread_charges
from .splines import alias_sum_u2
from .system import perpendicular_widths
from .tuning import fft_friendly
from .units import KE

__all__ = ["preconditioner_mesh", "mesh_correction"]

#: target spacing (Å) of the preconditioner's mesh, and its spline order
SPACING = 2.0
ORDER = 4
#: largest allowed eigenvalue of the scaled correction (1 would make M⁻¹ singular), and the
#: power-iteration steps that estimate it (power iteration approaches λ_max from below)
CAP = 0.9
POWER_STEPS = 20


def preconditioner_mesh(cell: np.ndarray) -> MeshSpec:
    """Coarse mesh (static) for :func:`mesh_correction`: about ``SPACING`` Å, order 4."""
    widths = perpendicular_widths(np.asarray(cell, dtype=np.float64))
    shape = tuple(max(ORDER, fft_friendly(math.ceil(w / SPACING))) for w in widths)
    return MeshSpec(shape, ORDER)


def mesh_correction(positions, hardness, sigma, cell, spec: MeshSpec):
    """Build ``r ↦ Δz``, the long-range correction added to the Jacobi step ``D⁻¹ r``.

    Args:
      positions: (N, 3) Å.  hardness: (N,) V/e.  sigma: (N,) Å.  cell: (3, 3) Å.
      spec: mesh from :func:`preconditioner_mesh`.

    Returns:
      a linear, symmetric negative semi-definite map (N,) → (N,); no gradients flow
      through it (a preconditioner only changes the iteration path, not the solution).
    """
    positions, hardness, sigma, cell = (jax.lax.stop_gradient(x) for x in (positions, hardness, sigma, cell))
    dtype = positions.dtype
    n = positions.shape[0]
    diag = hardness + KE / (math.sqrt(math.pi) * sigma)
    inv_d = 1.0 / diag
    # harmonic mean: the spread of D⁻¹ r averages 1/d_j, so this makes the plane-wave
    # response exact for varying diagonals (the arithmetic mean would overshoot)
    d_mean = 1.0 / jnp.mean(inv_d)
    volume = jnp.abs(jnp.linalg.det(cell))
    density = n / volume
    sig2 = jnp.mean(sigma**2)
    frac = positions @ jnp.linalg.inv(cell)
    k_tot = float(np.prod(spec.shape))

    k1, k2, k3 = spec.shape
    m = [np.fft.fftfreq(k1, 1.0 / k1), np.fft.fftfreq(k2, 1.0 / k2), np.arange(k3 // 2 + 1, dtype=np.float64)]
    u2 = [alias_sum_u2(mm, kk, spec.order) for mm, kk in zip(m, spec.shape)]  # Σ_a Û²: exact, no zeros
    u2 = jnp.asarray(u2[0][:, None, None] * u2[1][None, :, None] * u2[2][None, None, :], dtype)
    recip = 2.0 * math.pi * jnp.linalg.inv(cell).T
    grid = [jnp.asarray(x, dtype) for x in np.meshgrid(*m, indexing="ij")]
    kvec = sum(grid[a][..., None] * recip[a] for a in range(3))
    k2sq = jnp.sum(kvec * kvec, axis=-1)
    nonzero = k2sq > 0
    safe = jnp.where(nonzero, k2sq, 1.0)
    kern = jnp.where(nonzero, 4.0 * math.pi * KE * jnp.exp(-sig2 * safe) / safe, 0.0)
    spacing = jnp.max(_perpendicular_widths(cell) / jnp.asarray(spec.shape, dtype))
    taper = jnp.exp(-0.5 * safe * spacing**2)
    h = (k_tot / volume) * kern * d_mean / ((d_mean + density * kern) * u2) * taper

    def apply(h, r):
        mesh = spread_charges(frac, inv_d * r, spec)
        mesh = jnp.fft.irfftn(h * jnp.fft.rfftn(mesh), s=spec.shape)
        phi, _ = _interpolate(mesh, frac, spec)
        return -inv_d * phi

    # safeguard: the plane-wave picture ignores the density fluctuations of real systems,
    # which can push S = D^½ (−Δ) D^½ above 1 (an indefinite preconditioner).  Estimate
    # λ_max(S) by power iteration (mesh passes only) and scale h so that λ_max ≤ CAP.
    sqrt_d = jnp.sqrt(diag)

    def power_step(_, v):
        w = -sqrt_d * apply(h, sqrt_d * v)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(dtype).tiny)

    v0 = jax.random.normal(jax.random.PRNGKey(0), (n,), dtype)
    v = jax.lax.fori_loop(0, POWER_STEPS, power_step, v0 / jnp.linalg.norm(v0))
    lam = jnp.vdot(v, -sqrt_d * apply(h, sqrt_d * v))
    h = h * jnp.minimum(1.0, CAP / jnp.maximum(lam, jnp.finfo(dtype).tiny))

    def correction(r):
        return apply(h, r)

    return correction


def _perpendicular_widths(cell):
    """Distances between opposite faces of the cell (3,), jittable."""
    volume = jnp.abs(jnp.linalg.det(cell))
    areas = jnp.stack([jnp.linalg.norm(jnp.cross(cell[(d + 1) % 3], cell[(d + 2) % 3])) for d in range(3)])
    return volume / areas
