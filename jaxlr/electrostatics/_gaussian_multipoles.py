"""Coulomb interactions of atom-centred s- and p-type Gaussians (the density-coefficient basis).

Basis functions (DESIGN.md, "density coefficients"; units Å, e, eV):

* s-type, width σ, centre R:  ``g_σ(r − R) = (2πσ²)^(−3/2) exp(−|r − R|²/2σ²)``, normalised
  to unit charge; its coefficient is the charge it carries (e).
* p-type, width σ, centre R, component α:  ``p_σ,α(r − R) = −∂_α g_σ(r − R) = ∂g_σ/∂R_α``;
  no charge and unit dipole moment, ``∫ r p_α d³r = e_α``, so the coefficient vector
  ``μ ∈ R³`` of a p function is its dipole moment (e·Å).

Per atom the coefficients are laid out as ``[c_s1 … c_sns, μ_1x, μ_1y, μ_1z, μ_2x, …]``
(``n_basis = n_s + 3 n_p``), and the widths as the *shells* ``[σ_s1 … σ_sns, σ_p1 … σ_pnp]``.

Interaction kernels.  Two unit s Gaussians of widths σ_a, σ_b whose centres are
``d = R_j − R_i`` apart interact with ``KE K(u; γ)``, ``u = |d|²``, ``γ² = σ_a² + σ_b²``,

    K(u; γ) = erf(√u / (√2 γ)) / √u,          K(0; γ) = √(2/π) / γ,

written as a smooth function of u (a Taylor series for u < γ²/2), so that every
derivative is exact and finite, also for functions on the same centre.  p functions are
derivatives with respect to their centre, so with ``K' = dK/du`` and ``K'' = d²K/du²``:

    s_a(i)–s_b(j)        K
    s_a(i)–p_b,β(j)      ∂K/∂R_jβ      =  2 d_β K'
    p_a,α(i)–s_b(j)      ∂K/∂R_iα      = −2 d_α K'
    p_a,α(i)–p_b,β(j)    ∂²K/∂R_iα∂R_jβ = −2 δ_αβ K' − 4 d_α d_β K''

These are the gradient and (minus the) Hessian of ``K(|d|²)`` with respect to d, i.e.
automatic differentiation of the s–s kernel; :func:`radial_derivatives` evaluates K' and
K'' in closed form instead of by nested autodiff (the compiled programs are about half
the size), and the tests check every entry against ``jax.grad``/``jax.hessian`` of the
s–s kernel and against finite differences.
On the same centre the s–p terms vanish and ``p–p = δ_αβ √(2/π)/(3γ³)``; far apart,
p–p tends to the classical dipole–dipole tensor ``(δ_αβ − 3 n_α n_β)/r³``.  The Coulomb
energy of the density ``ρ = Σ c·basis`` is ``E = ½ cᵀ C c`` with ``C`` (eV/e², includes
KE) holding every pair, each function's self-interaction and the same-atom cross terms.

Periodic cells (tin-foil boundary) use the Ewald split of :mod:`jaxlr.electrostatics` with
smearing s: real-space kernel ``K(u; γ) − K(u; s)`` (as an erfc difference far out) over
the images of a full neighbour list plus each atom's own zero-shift block (which holds
the self terms); reciprocal part ``(KE/V) Σ_{k≠0} (4π/k²) e^{−k²s²/2} |S(k)|²/2`` with
the structure factor ``S(k) = Σ_i (q_i + i k·μ_i) e^{ik·R_i}`` of point charges
``q_i = Σ c_s`` and point dipoles ``μ_i = Σ μ_p`` — the Gaussian widths only enter in
real space, exactly as for Gaussian charges in :func:`jaxlr.coulomb_energy`.  A net
charge needs the uniform neutralising background (``background=True``), whose term
``−(π KE/V) Σ_ab c_a c_b (s² − σ_a² − σ_b²)`` over s functions equals jaxlr's convention
for Gaussian charges; dipoles have no k = 0 term.

Three evaluations of C:

* :func:`multipole_matrix` — the dense (N·n_basis)² matrix, open boundary (all pairs) or
  Ewald (neighbour list + explicit k-vectors); reference grade.
* :func:`make_pme_matvec` — matrix-free ``c ↦ C c`` with smooth PME: charges and dipoles
  spread with B-spline weights and their derivatives (the transpose of the B-spline
  interpolation of the potential and its gradient), one FFT pair per product.
* :func:`multipole_energy` — ``½ cᵀ C c`` by either route.

:func:`density_potentials` gives the interaction of every basis function with an
external Gaussian density (the right-hand side of a Coulomb-metric density fit).
Everything is jittable and differentiable to any order in positions, widths, cell and
smearing; dtypes follow the inputs.
"""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ..system._neighbors import Neighbors, pair_displacements
from ..units import KE
from ._ewald import structure_tables
from ._kernels import ERF_SERIES, ERF_SERIES_D1, erfc_exp, horner
from ._pme import MeshSpec, influence_function, interpolate_mesh

__all__ = ["density_potentials", "gaussian_kernel", "interaction_tensor", "make_pme_matvec",
           "multipole_energy", "multipole_matrix", "pair_blocks", "radial_derivatives"]

_SQRT2 = math.sqrt(2.0)
_C = math.sqrt(2.0 / math.pi)
#: below y = u/(2w²) = 0.25 erf(x)/x is summed as a Taylor series in y (16 terms: the
#: truncation error of the value and of its first four u-derivatives is below 1e-17);
#: above it the closed form loses at most ~eps/y^n in the n-th derivative.  The series
#: and its first derivative are :mod:`jaxlr.electrostatics`'s (in y = x², the same switch x = 0.5)
_SERIES_Y = 0.25
_SERIES_D2 = tuple(n * (n - 1) * a for n, a in enumerate(ERF_SERIES))[2:]


def _series(u, w):
    """Taylor series of f(u) = erf(√u/√2w)/√u and its first two u-derivatives, and where it is used."""
    w2 = 2.0 * w * w
    small = u < _SERIES_Y * w2
    y = jnp.where(small, u / w2, 0.0)
    c = _C / w
    return small, (c * horner(ERF_SERIES, y), (c / w2) * horner(ERF_SERIES_D1, y),
                   (c / (w2 * w2)) * horner(_SERIES_D2, y))


def _closed(u, w, small):
    """Closed-form pieces at a safe u (w² where the series is used: never u = 0).

    Returns (u_c, r_c, erfc(r_c/√2w), G = √(2/π)/w e^{−u_c/2w²}); f = (1 − erfc)/r and
    f' = (G − f)/(2u), f'' = −(G/2w² + 3f')/(2u).  The erfc and the exponential share one
    exponential (:func:`jaxlr.electrostatics.erfc_exp`).
    """
    uc = jnp.where(small, w * w, u)
    r = jnp.sqrt(uc)
    ec, e = erfc_exp(r / (_SQRT2 * w))
    return uc, r, ec, (_C / w) * e


def _closed_derivs(uc, w, f0, g):
    f1 = (g - f0) / (2.0 * uc)
    return f0, f1, -(g / (2.0 * w * w) + 3.0 * f1) / (2.0 * uc)


def radial_derivatives(u, gamma, smearing=None):
    """``(K, dK/du, d²K/du²)`` of the kernel of :func:`gaussian_kernel` (1/Å, 1/Å³, 1/Å⁵).

    Closed forms ``K' = (G − K)/(2u)``, ``K'' = −(G/2γ² + 3K')/(2u)`` with
    ``G = √(2/π)/γ e^{−u/2γ²}`` (differences of such terms for the Ewald kernel, whose value
    is ``[erfc(r/√2s) − erfc(r/√2γ)]/r`` when neither width is in its series range), and a
    16-term Taylor series in u/2w² below 0.25 for each width.  Shapes broadcast.  The
    expressions are plain differentiable JAX, so higher derivatives (forces through the
    p–p terms, derivatives of forces) follow by autodiff.
    """
    u, gamma = jnp.broadcast_arrays(u, gamma)
    small_g, series_g = _series(u, gamma)
    ug, rg, ecg, gg = _closed(u, gamma, small_g)
    closed_g = _closed_derivs(ug, gamma, (1.0 - ecg) / rg, gg)
    if smearing is None:
        return tuple(jnp.where(small_g, a, b) for a, b in zip(series_g, closed_g))
    s = jnp.broadcast_to(jnp.asarray(smearing, u.dtype), u.shape)
    small_s, series_s = _series(u, s)
    us, rs, ecs, gs = _closed(u, s, small_s)
    closed_s = _closed_derivs(us, s, (1.0 - ecs) / rs, gs)
    k_g = [jnp.where(small_g, a, b) for a, b in zip(series_g, closed_g)]
    k_s = [jnp.where(small_s, a, b) for a, b in zip(series_s, closed_s)]
    # neither in its series range (then u_c = u for both): the erfc difference keeps full
    # relative precision far out, where both erf's are 1
    h0 = (ecs - ecg) / rg
    h1 = (gg - gs - h0) / (2.0 * ug)
    h2 = -(gg / (2.0 * gamma * gamma) - gs / (2.0 * s * s) + 3.0 * h1) / (2.0 * ug)
    both = ~(small_g | small_s)
    return tuple(jnp.where(both, h, a - b) for h, a, b in zip((h0, h1, h2), k_g, k_s))


def gaussian_kernel(u, gamma, smearing=None):
    """Coulomb kernel of two unit s Gaussians as a smooth function of u = r² (1/Å).

    Args:
      u: squared distances ``|d|²`` in Å² (≥ 0, any shape).
      gamma: combined width √(σ_a² + σ_b²) in Å, broadcastable to ``u``.
      smearing: Ewald smearing s (Å) for the real-space part of a periodic sum, or None.

    Returns:
      ``erf(√u/√2γ)/√u`` (open boundary) or ``[erf(√u/√2γ) − erf(√u/√2s)]/√u`` (Ewald
      real space, as ``[erfc(r/√2s) − erfc(r/√2γ)]/r`` where it would lose precision).
      Exact and smooth also at u = 0 (a Taylor series in u/2γ² below 0.25), so all
      derivatives are finite there.

    Example:
      >>> round(float(gaussian_kernel(0.0, 1.0)), 6)  # √(2/π)
      0.797885
    """
    return radial_derivatives(u, gamma, smearing)[0]


def interaction_tensor(d, gamma, smearing=None):
    """Interaction tensor T (..., 4, 4) of an s+p function pair (1/Å, without KE).

    ``T[0, 0]`` s(i)–s(j), ``T[0, 1+β]`` s(i)–p_β(j), ``T[1+α, 0]`` p_α(i)–s(j),
    ``T[1+α, 1+β]`` p_α(i)–p_β(j), for functions of combined width ``gamma`` centred at
    R_i and R_j = R_i + d (see the module docstring).  The energy of charges q and
    dipoles μ is ``KE [q_i, μ_i] T [q_j, μ_j]``.

    Args:
      d: (..., 3) displacement R_j − R_i in Å (may be 0).  gamma: (...) Å.
      smearing: Ewald smearing (Å) for the real-space part, or None (bare interaction).

    Example:
      >>> T = interaction_tensor(jnp.array([0.0, 0.0, 30.0]), 1e-3)   # ≈ point dipoles
      >>> round(float(T[3, 3] * 30.0**3), 4)     # (1 − 3 n_z²)/r³ · r³
      -2.0
    """
    u = jnp.sum(d * d, axis=-1)
    k, k1, k2 = radial_derivatives(u, gamma, smearing)
    k, k1, k2 = (jnp.broadcast_to(x[..., None, None], x.shape + (2, 2)) for x in (k, k1, k2))
    return _assemble(k, k1, k2, d, 1, 1)


def _assemble(k, k1, k2, d, ns_i, ns_j):
    """Blocks (..., nb_i, nb_j) from radial values (..., sh_i, sh_j) and displacements (..., 3)."""
    lead = k.shape[:-2]
    np_i = k.shape[-2] - ns_i
    np_j = k.shape[-1] - ns_j
    dd = jnp.broadcast_to(d, lead + (3,))[..., None, None, :]
    ss = k[..., :ns_i, :ns_j]
    sp = (2.0 * k1[..., :ns_i, ns_j:, None] * dd).reshape(lead + (ns_i, 3 * np_j))
    ps = -2.0 * k1[..., ns_i:, :ns_j, None] * dd                            # (..., np_i, ns_j, 3)
    ps = jnp.swapaxes(ps, -1, -2).reshape(lead + (3 * np_i, ns_j))
    eye = jnp.eye(3, dtype=k.dtype)
    outer = dd[..., :, None] * dd[..., None, :]                             # (..., 1, 1, 3, 3)
    pp = (-2.0 * k1[..., ns_i:, ns_j:, None, None] * eye
          - 4.0 * k2[..., ns_i:, ns_j:, None, None] * outer)               # (..., np_i, np_j, 3, 3)
    pp = jnp.swapaxes(pp, -3, -2).reshape(lead + (3 * np_i, 3 * np_j))
    top = jnp.concatenate([ss, sp], axis=-1)
    bottom = jnp.concatenate([ps, pp], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def _radial(d, shells_i, shells_j, smearing):
    u = jnp.sum(d * d, axis=-1)[..., None, None]
    gamma = jnp.sqrt(shells_i[..., :, None] ** 2 + shells_j[..., None, :] ** 2)
    return radial_derivatives(u, gamma, smearing)


def pair_blocks(d, shells_i, shells_j, ns_i: int, ns_j: int | None = None, smearing=None):
    """Interaction blocks between the bases of atoms i and j (1/Å, without KE).

    Args:
      d: (..., 3) displacements R_j − R_i (Å; 0 for an atom with itself).
      shells_i: (..., sh_i) widths of atom i's functions ``[σ_s…, σ_p…]`` (Å).
      shells_j: (..., sh_j) likewise for atom j; all three broadcast together.
      ns_i, ns_j: number of s shells of i and j (static; ``ns_j`` defaults to ``ns_i``).
      smearing: Ewald smearing for the real-space part, or None.

    Returns:
      (..., nb_i, nb_j) with ``nb = ns + 3 (sh − ns)`` in the per-atom coefficient layout:
      ``E = KE c_iᵀ B c_j`` for the pair.

    Example:
      >>> B = pair_blocks(jnp.zeros(3), jnp.array([1.0, 0.5]), jnp.array([1.0, 0.5]), 1)
      >>> B.shape          # one s and one p function per atom
      (4, 4)
    """
    ns_j = ns_i if ns_j is None else ns_j
    k, k1, k2 = _radial(d, shells_i, shells_j, smearing)
    return _assemble(k, k1, k2, d, ns_i, ns_j)


def _components(ns: int, npf: int) -> np.ndarray:
    """Index 0 (charge) or 1 + α (dipole component) of each slot of the per-atom layout."""
    return np.array([0] * ns + [1, 2, 3] * npf, dtype=np.int64)


def basis_shells(sigma_s, sigma_p):
    return jnp.concatenate([sigma_s, sigma_p], axis=1)


def _reciprocal_matrix(positions, cell, smearing, kvectors):
    """(4N, 4N) reciprocal Ewald matrix of point charges and point dipoles (includes KE)."""
    dtype = positions.dtype
    n = positions.shape[0]
    recip = 2.0 * math.pi * jnp.linalg.inv(cell).T
    volume = jnp.abs(jnp.linalg.det(cell))

    def chunk(acc, m):
        k, psi, c, s = structure_tables(positions, m, recip, smearing)
        # F = e^{ik·R} for a charge, i k_β e^{ik·R} for a dipole component β; F = a + i b
        a = jnp.concatenate([c[:, None], -k.T[None] * s[:, None]], axis=1).reshape(4 * n, -1)
        b = jnp.concatenate([s[:, None], k.T[None] * c[:, None]], axis=1).reshape(4 * n, -1)
        return acc + (a * psi) @ a.T + (b * psi) @ b.T, None

    rec, _ = jax.lax.scan(chunk, jnp.zeros((4 * n, 4 * n), dtype), jnp.asarray(kvectors))
    # half space: k and −k contribute equally → (KE/V) Σ_full 4π ψ Re(F̄F) = (8π KE/V) Σ_half
    return (8.0 * math.pi * KE / volume) * rec


def _background_s(sigma_s, n_p, smearing, volume):
    """Background Hessian terms: (s-slot indicator (N·nb,), σ² at s slots (N·nb,), factor)."""
    n, ns = sigma_s.shape
    zeros_p = jnp.zeros((n, 3 * n_p), sigma_s.dtype)
    ind = jnp.concatenate([jnp.ones_like(sigma_s), zeros_p], axis=1).reshape(-1)
    sig2 = jnp.concatenate([sigma_s**2, zeros_p], axis=1).reshape(-1)
    return ind, sig2, -2.0 * math.pi * KE / volume


def multipole_matrix(positions, sigma_s, sigma_p, *, cell=None, smearing=None,
                     neighbors: Neighbors | None = None, kvectors=None, background: bool = False):
    """Dense Coulomb matrix C (N·n_basis, N·n_basis), eV/e², with ``E = ½ cᵀ C c``.

    Args:
      positions: (N, 3) Å.
      sigma_s: (N, n_s) widths of each atom's s functions (Å, > 0).
      sigma_p: (N, n_p) widths of each atom's p functions (Å, > 0); n_p may be 0.
      cell: (3, 3) rows are lattice vectors (Ewald sum), or None (open boundary, all pairs).
      smearing: Ewald smearing s (Å), periodic only.
      neighbors: full :class:`jaxlr.Neighbors` list (periodic) with cutoff beyond the
        real-space range of the largest combined width and of s.
      kvectors: (n_chunks, chunk, 3) half-space integer k-vectors
        (:func:`jaxlr.electrostatics.half_space_kvectors`), periodic only.
      background: add the neutralising-background term (charged periodic cells).

    Returns:
      symmetric C in the flat layout ``c.reshape(N·n_basis)`` with per-atom slots
      ``[c_s…, μ_1xyz, …]``.  Differentiable in positions, widths, cell and smearing.

    Example:
      >>> R = jnp.array([[0.0, 0, 0], [2.0, 0, 0]])
      >>> C = multipole_matrix(R, jnp.full((2, 1), 0.5), jnp.full((2, 1), 0.5))
      >>> C.shape
      (8, 8)
    """
    n, ns = sigma_s.shape
    n_p = sigma_p.shape[1]
    nb = ns + 3 * n_p
    shells = basis_shells(sigma_s, sigma_p)
    if cell is None:
        d = positions[None, :, :] - positions[:, None, :]
        blocks = pair_blocks(d, shells[:, None, :], shells[None, :, :], ns)       # (N, N, nb, nb)
        return KE * jnp.swapaxes(blocks, 1, 2).reshape(n * nb, n * nb)
    smearing = jnp.asarray(smearing, positions.dtype)
    rows = jnp.arange(n)
    idx = neighbors.idx
    d = jnp.stack(pair_displacements(positions, cell, rows, idx, neighbors.shifts)[0], axis=-1)
    blocks = pair_blocks(d, shells[:, None, :], shells[idx], ns, smearing=smearing)  # (N, M, nb, nb)
    blocks = jnp.where(neighbors.mask[..., None, None], blocks, 0.0)
    mat = jnp.zeros((n, n, nb, nb), blocks.dtype)
    mat = mat.at[jnp.broadcast_to(rows[:, None], idx.shape), idx].add(blocks)
    onsite = pair_blocks(jnp.zeros((n, 3), positions.dtype), shells, shells, ns, smearing=smearing)
    mat = mat.at[rows, rows].add(onsite)
    mat = KE * jnp.swapaxes(mat, 1, 2).reshape(n * nb, n * nb)
    slot = (4 * np.arange(n)[:, None] + _components(ns, n_p)[None, :]).reshape(-1)
    rec = _reciprocal_matrix(positions, cell, smearing, kvectors)
    mat = mat + rec[slot][:, slot]
    if background:
        volume = jnp.abs(jnp.linalg.det(cell))
        ind, sig2, factor = _background_s(sigma_s, n_p, smearing, volume)
        hess = smearing**2 * ind[:, None] * ind[None, :] - sig2[:, None] * ind[None, :] - ind[:, None] * sig2[None, :]
        mat = mat + factor * hess
    return mat


def _real_space_matvec(coefficients, positions, sigma_s, sigma_p, cell, smearing, neighbors):
    """Real-space (Ewald) part of C c over a full neighbour list plus the on-site blocks (eV/e)."""
    n, ns = sigma_s.shape
    n_p = sigma_p.shape[1]
    shells = basis_shells(sigma_s, sigma_p)
    idx, mask = neighbors.idx, neighbors.mask
    d = jnp.stack(pair_displacements(positions, cell, jnp.arange(n), idx, neighbors.shifts)[0], axis=-1)
    k, k1, k2 = _radial(d, shells[:, None, :], shells[idx], smearing)        # (N, M, sh, sh)
    live = mask[..., None, None]
    k, k1, k2 = (jnp.where(live, x, 0.0) for x in (k, k1, k2))
    cs = coefficients[:, :ns]
    cp = coefficients[:, ns:].reshape(n, n_p, 3)
    cs_j, cp_j = cs[idx], cp[idx]                                             # (N, M, ns), (N, M, np, 3)
    d_mu = jnp.einsum("nmk,nmbk->nmb", d, cp_j)                               # d · μ_jb
    out_s = (jnp.einsum("nmab,nmb->na", k[..., :ns, :ns], cs_j)
             + 2.0 * jnp.einsum("nmab,nmb->na", k1[..., :ns, ns:], d_mu))
    out_p = (-2.0 * jnp.einsum("nmab,nmb,nmk->nak", k1[..., ns:, :ns], cs_j, d)
             - 2.0 * jnp.einsum("nmab,nmbk->nak", k1[..., ns:, ns:], cp_j)
             - 4.0 * jnp.einsum("nmab,nmb,nmk->nak", k2[..., ns:, ns:], d_mu, d))
    out = jnp.concatenate([out_s, out_p.reshape(n, 3 * n_p)], axis=1)
    onsite = pair_blocks(jnp.zeros((n, 3), positions.dtype), shells, shells, ns, smearing=smearing)
    return KE * (out + jnp.einsum("nab,nb->na", onsite, coefficients))


def _mesh_potentials(charges, dipoles, positions, cell, smearing, spec: MeshSpec):
    """PME reciprocal potential φ_i (N,) and its gradient ∂φ/∂R_i (N, 3) of point charges and dipoles.

    The mesh charge ``Q = Σ_i q_i W(u_i) + μ_i·∇_{R_i} W(u_i)`` is the transpose of the
    B-spline interpolation of a mesh field and its gradient (so the operator is exactly
    symmetric); ``φ_i = ∂E_rec/∂q_i`` and ``∂φ/∂R_i = ∂E_rec/∂μ_i``.
    """
    mesh_cell = jnp.asarray(spec.basis, cell.dtype) @ cell
    inv = jnp.linalg.inv(mesh_cell)
    frac = positions @ inv
    zero = jnp.zeros(spec.shape, positions.dtype)
    # the interpolated fractional gradient is ∂φ/∂u; ∂/∂R_α = Σ_d inv[α, d] ∂/∂u_d, so the
    # dipole's weight on ∂/∂u_d is (μ @ inv)_d
    _, transpose = jax.vjp(lambda m: interpolate_mesh(m, frac, spec), zero)
    (q_mesh,) = transpose((charges, dipoles @ inv))
    g = influence_function(mesh_cell, smearing, spec)
    n_total = float(np.prod(spec.shape))
    mesh_phi = jnp.fft.irfftn(g * jnp.fft.rfftn(q_mesh) * n_total, s=spec.shape)
    phi, grad_u = interpolate_mesh(mesh_phi, frac, spec)
    return phi, grad_u @ inv.T


@lru_cache(maxsize=64)
def make_pme_matvec(spec: MeshSpec):
    """Build the matrix-free product ``c ↦ C c`` (eV/e) with smooth PME (cached per mesh).

    Returns ``matvec(coefficients, positions, sigma_s, sigma_p, cell, smearing, neighbors,
    background=False)`` with ``coefficients`` (N, n_basis) → (N, n_basis): the real-space
    blocks over ``neighbors`` (full list), the on-site blocks, the mesh part of point
    charges ``q_i = Σ c_s`` and point dipoles ``μ_i = Σ μ_p`` with smearing s, and the
    optional background term.  It equals ``multipole_matrix(...) @ c`` up to the mesh
    accuracy (use spline order 8 for dipoles: their field is interpolated with B-spline
    derivatives, one order less accurate than the potential).  Jittable, differentiable.

    Example:
      >>> mv = make_pme_matvec(MeshSpec((24, 24, 24), order=8))
      >>> # y = mv(c, R, sigma_s, sigma_p, cell, 1.5, neighbors)
    """
    def matvec(coefficients, positions, sigma_s, sigma_p, cell, smearing, neighbors, background=False):
        n, ns = sigma_s.shape
        n_p = sigma_p.shape[1]
        smearing = jnp.asarray(smearing, positions.dtype)
        out = _real_space_matvec(coefficients, positions, sigma_s, sigma_p, cell, smearing, neighbors)
        q = jnp.sum(coefficients[:, :ns], axis=1)
        mu = jnp.sum(coefficients[:, ns:].reshape(n, n_p, 3), axis=1)
        phi, grad = _mesh_potentials(q, mu, positions, cell, smearing, spec)
        mesh = jnp.concatenate([jnp.broadcast_to(phi[:, None], (n, ns)), jnp.tile(grad, (1, n_p))], axis=1)
        out = out + mesh
        if background:
            volume = jnp.abs(jnp.linalg.det(cell))
            ind, sig2, factor = _background_s(sigma_s, n_p, smearing, volume)
            flat = coefficients.reshape(-1)
            total, moment = jnp.sum(ind * flat), jnp.sum(sig2 * flat)
            out = out + (factor * (smearing**2 * total * ind - sig2 * total - ind * moment)).reshape(n, -1)
        return out

    return matvec


def multipole_energy(coefficients, positions, sigma_s, sigma_p, *, cell=None, method: str = "direct",
                     smearing=None, neighbors=None, kvectors=None, mesh: MeshSpec | None = None,
                     background: bool = False):
    """Coulomb energy ``½ cᵀ C c`` (eV) of the density ``Σ c·basis`` — self terms included.

    Args:
      coefficients: (N, n_basis) in the per-atom layout (charges e, dipoles e·Å).
      positions, sigma_s, sigma_p, cell, smearing, neighbors, kvectors, background: as in
        :func:`multipole_matrix`.
      method: "direct" (open boundary), "ewald" (dense) or "pme" (static).
      mesh: :class:`jaxlr.MeshSpec` for "pme".

    Example:
      >>> R = jnp.zeros((1, 3)); c = jnp.array([[1.0]])
      >>> e = multipole_energy(c, R, jnp.array([[1.0]]), jnp.zeros((1, 0)))
      >>> round(float(e), 4)   # KE / (2√π σ)
      4.0621
    """
    if method == "pme":
        out = make_pme_matvec(mesh)(coefficients, positions, sigma_s, sigma_p, cell, smearing, neighbors,
                                    background)
        return 0.5 * jnp.sum(coefficients * out)
    if method not in ("direct", "ewald"):
        raise ValueError(f"unknown method {method!r}; choose 'direct', 'ewald' or 'pme'.")
    if (method == "direct") != (cell is None):
        raise ValueError("method='direct' is the open boundary (cell=None); 'ewald' and 'pme' need a cell.")
    mat = multipole_matrix(positions, sigma_s, sigma_p, cell=cell, smearing=smearing, neighbors=neighbors,
                           kvectors=kvectors, background=background)
    c = coefficients.reshape(-1)
    return 0.5 * c @ (mat @ c)


def density_potentials(positions, sigma_s, sigma_p, centres, widths, charges, dipoles=None):
    """Coulomb interaction of every basis function with a Gaussian density (eV/e), open boundary.

    The density is ``ρ(r) = Σ_m q_m g_{w_m}(r − X_m) + μ_m·p_{w_m}(r − X_m)`` (s and p
    Gaussians of this module's normalisation).  Returns ``v`` (N, n_basis) with
    ``v_x = KE ∫∫ b_x(r) ρ(r')/|r − r'|``, the derivative with respect to ``c_x`` of the
    interaction energy of ``Σ c·basis`` with ρ — the right-hand side of a Coulomb-metric
    fit ``C c = v``.

    Args:
      positions: (N, 3) Å; sigma_s (N, n_s), sigma_p (N, n_p) basis widths (Å).
      centres: (M, 3) Å.  widths: (M,) Å > 0.  charges: (M,) e.
      dipoles: (M, 3) e·Å or None.
    """
    n, ns = sigma_s.shape
    shells = basis_shells(sigma_s, sigma_p)
    if dipoles is None:
        dipoles = jnp.zeros_like(centres)
    d = centres[None, :, :] - positions[:, None, :]                                # (N, M, 3)
    dens_shells = jnp.stack([widths, widths], axis=-1)                             # (M, 2): s and p
    blocks = pair_blocks(d, shells[:, None, :], dens_shells[None, :, :], ns, 1)   # (N, M, nb, 4)
    dens = jnp.concatenate([charges[:, None], dipoles], axis=1)                    # (M, 4)
    return KE * jnp.einsum("nmxy,my->nx", blocks, dens)
