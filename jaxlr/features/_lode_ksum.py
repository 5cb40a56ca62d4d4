"""Periodic LODE features by an explicit k-sum — the reference route, O(N · N_k).

Per species a, ρ_a = Σ_{j∈a} unit Gaussians of width σ_L, and V_a = ρ_a ∗ 1/r (no Coulomb
constant: V_a is in e/Å per unit "charge" of each atom).  In a periodic cell of volume V,
with the k = 0 term dropped (a uniform neutralising background for each species density,
as in featomic),

    ⟨a n l m|V_i⟩ = Σ_{k≠0} (4π/(V k²)) e^{−σ_L²k²/2} · 4π i^l Y_lm(k̂) I_nl(k) · Σ_{j∈a} e^{ik·(R_i − R_j)}

(the plane-wave expansion of e^{ik·x}, see :mod:`jaxlr.features`).  Note the
sign: the phase is e^{ik·(R_i − R_j)} together with i^l (equivalently e^{ik·(R_j − R_i)}
with (−i)^l).  Combining k and −k leaves, for half of k-space,

    2 (16π²/V) ψ(k) J_nl(k) S_lm(k) · { (−1)^{l/2} Re s_ia(k)        (l even)
                                        (−1)^{(l+1)/2} Im s_ia(k)    (l odd) },

with ψ = e^{−σ_L²k²/2}/k², S_lm the solid harmonics, J_nl = I_nl/k^l and
s_ia(k) = e^{ik·R_i} Σ_{j∈a} e^{−ik·R_j}.  The k-vectors are processed in chunks under
``lax.scan`` with rematerialisation (memory O(N · chunk)).  Plain autodiff gives
derivatives with respect to positions, cell, σ_L and basis widths.

The multipole variant returns, per species, the potential V_a(R_i), the field
E = −∇V_a and the field gradient ∂E_α/∂x_β = −∂²V_a/∂x_α∂x_β at each atom.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._ewald import screened_inverse_square
from ._harmonics import solid_harmonics
from ._lode_kspace import projected_bessel, radial_evaluator, radial_nodes, self_projection

__all__ = ["lode_ksum", "lode_ksum_multipoles", "ksum_cutoff", "l_of_lm", "self_multipoles", "species_onehot",
           "finish_features", "finish_multipoles"]


def l_of_lm(max_angular: int) -> np.ndarray:
    """The l of each flat (l, m) column: [0, 1, 1, 1, 2, …], length (L+1)².

    Example:
      >>> l_of_lm(2).tolist()
      [0, 1, 1, 1, 2, 2, 2, 2, 2]
    """
    return np.repeat(np.arange(max_angular + 1), 2 * np.arange(max_angular + 1) + 1)


def ksum_cutoff(sigma: float, accuracy: float) -> float:
    """A conservative k-space cutoff (1/Å) of the k-sum for a target relative error (host rule).

    The terms beyond k_c are bounded by e^{−σ_L²k_c²/2}/k_c² times the slowly varying
    I_nl(k); ``k_c = √(2 ln(1/accuracy) + 2)/σ_L`` keeps the relative error below
    ``accuracy`` whatever the basis — typically 10–1000× below it.  The feature tuner uses
    the sharper :meth:`jaxlr.tuning.LodeErrorModel.ksum` instead; this rule
    serves the multipole k-sum and converged references.

    Example:
      >>> round(ksum_cutoff(1.0, 1e-6), 4)
      5.4434
    """
    sigma, accuracy = float(sigma), float(accuracy)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive width in Å, got {sigma!r}.")
    if not 0.0 < accuracy < 1.0:
        raise ValueError(f"accuracy must lie in (0, 1), got {accuracy!r}.")
    return math.sqrt(2.0 * math.log(1.0 / accuracy) + 2.0) / sigma


def species_onehot(species_index, n_species: int, dtype):
    """(N, A) one-hot of the species index; rows of padding atoms (index −1) are zero.

    Example:
      >>> species_onehot(jnp.array([1, -1, 0]), 2, jnp.float32).tolist()
      [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    """
    return (jnp.asarray(species_index)[:, None] == jnp.arange(n_species)[None, :]).astype(dtype)


def finish_features(values, species_index, onehot, own, exclude_center: bool):
    """Subtract each atom's own-Gaussian projection (if asked) and zero the padding rows.

    ``values`` (N, A, n_max, (L+1)²); ``onehot`` (N, A) from :func:`species_onehot`;
    ``own`` (n_max,) the l = 0 projection of an atom's own Gaussian
    (:func:`jaxlr.features._lode_kspace.self_projection`, only used with ``exclude_center``).
    Shared by the k-sum and PME routes (the open-boundary route leaves the pair out instead).

    Example:
      >>> v = jnp.ones((2, 1, 3, 4))
      >>> out = finish_features(v, jnp.array([0, -1]), jnp.array([[1.0], [0.0]]), jnp.full(3, 0.5), True)
      >>> out[0, 0, :, 0].tolist(), float(out[1].sum())
      ([0.5, 0.5, 0.5], 0.0)
    """
    dtype = values.dtype
    if exclude_center:
        values = values.at[..., 0].add(-onehot[:, :, None] * own[None, None, :])
    valid = (species_index >= 0)[:, None, None, None]
    return jnp.where(valid, values, jnp.zeros((), dtype))


def _structure(positions, onehot, k):
    """Re s_ia(k) and Im s_ia(k), each (N, A, C), for k (C, 3)."""
    phase = positions @ k.T
    c, s = jnp.cos(phase), jnp.sin(phase)
    ca = onehot.T @ c                     # (A, C)
    sa = onehot.T @ s
    re = c[:, None, :] * ca[None] + s[:, None, :] * sa[None]
    im = s[:, None, :] * ca[None] - c[:, None, :] * sa[None]
    return re, im


def _psi(k, sigma):
    """ψ(k) = e^{−σ²k²/2}/k² (0 at k = 0) and a safe |k| (1 at k = 0)."""
    psi, safe = screened_inverse_square(jnp.sum(k * k, axis=-1), sigma)
    return psi, jnp.sqrt(safe)


def lode_ksum(positions, species_index, cell, sigma, widths, kvectors, *, n_species: int, cutoff: float,
              max_angular: int, n_points: int, exclude_center: bool = False):
    """Periodic LODE features ⟨a n l m|V_i⟩ by the explicit k-sum (jittable reference).

    Args:
      positions: (N, 3) Å.  species_index: (N,) int in [0, n_species), −1 for padding
        atoms (they contribute nothing and get zero features).
      cell: (3, 3) Å, rows are lattice vectors.  sigma: σ_L in Å (traced scalar).
      widths: (n_max,) GTO widths in Å (traced).
      kvectors: (n_chunks, chunk, 3) integer-valued half-space vectors from
        :func:`jaxlr.electrostatics.half_space_kvectors` with the cutoff of :func:`ksum_cutoff`.
      n_species, cutoff (r_c, Å), max_angular (L), n_points (radial quadrature nodes, see
        :func:`jaxlr.features._lode_kspace.radial_points`): static.
      exclude_center: drop the atom's own Gaussian (its periodic images stay).

    Returns:
      (N, n_species, n_max, (L+1)²) features, units e/Å · Å^{3/2} (V_a has no k_e factor).

    Example:
      >>> import numpy as np, jax.numpy as jnp, jaxlr
      >>> from jaxlr.features import gto_widths
      >>> cell = np.eye(3) * 6.0; R = jnp.array([[0.0, 0, 0], [3.0, 3, 3]])
      >>> kv = jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, ksum_cutoff(1.0, 1e-6)))
      >>> f = lode_ksum(R, jnp.array([0, 1]), jnp.asarray(cell), 1.0, jnp.asarray(gto_widths(3.0, 4)), kv,
      ...               n_species=2, cutoff=3.0, max_angular=2, n_points=64)
      >>> f.shape
      (2, 2, 4, 9)
    """
    dtype = positions.dtype
    L = max_angular
    n_max = widths.shape[0]
    lidx = l_of_lm(L)
    sign = np.where(lidx % 2 == 0, (-1.0) ** (lidx // 2), (-1.0) ** ((lidx + 1) // 2))
    even = jnp.asarray(lidx % 2 == 0)
    recip = 2.0 * math.pi * jnp.linalg.inv(cell).T
    volume = jnp.abs(jnp.linalg.det(cell))
    onehot = species_onehot(species_index, n_species, dtype)
    sigma = jnp.asarray(sigma, dtype)
    radial = radial_evaluator(jnp.asarray(widths, dtype), cutoff)
    nodes = radial_nodes(jnp.asarray(widths, dtype), cutoff=cutoff, n_points=n_points, radial=radial)

    @jax.checkpoint
    def chunk(carry, m):
        k = m.astype(dtype) @ recip
        psi, kn = _psi(k, sigma)
        j = projected_bessel(kn, nodes, L)
        w = (32.0 * math.pi**2 / volume) * psi[:, None, None] * j[:, :, lidx] \
            * solid_harmonics(k, L)[:, None, :] * jnp.asarray(sign, dtype)
        re, im = _structure(positions, onehot, k)
        zero = jnp.zeros((), dtype)
        out = (jnp.einsum("iac,cnq->ianq", re, jnp.where(even, w, zero))
               + jnp.einsum("iac,cnq->ianq", im, jnp.where(even, zero, w)))
        return carry + out, None

    init = jnp.zeros((positions.shape[0], n_species, n_max, (L + 1) ** 2), dtype)
    values, _ = jax.lax.scan(chunk, init, jnp.asarray(kvectors))
    own = self_projection(sigma, widths, cutoff=cutoff, radial=radial) if exclude_center else None
    return finish_features(values, species_index, onehot, own, exclude_center)


def self_multipoles(sigma, dtype):
    """Potential and field gradient of an atom's own unit Gaussian at its centre.

    V_self = √(2/π)/σ;  the field vanishes;  −∂²V/∂x∂x = √(2/π)/(3σ³) · 1 (3×3 identity).
    Units e/Å and e/Å³ for σ in Å.

    Example:
      >>> v, g = self_multipoles(1.0, jnp.float32)
      >>> round(v, 6), round(float(g[0, 0]), 6)
      (0.797885, 0.265962)
    """
    v = math.sqrt(2.0 / math.pi) / sigma
    return v, v / (3.0 * sigma**2) * jnp.eye(3, dtype=dtype)


def finish_multipoles(pot, field, grad, species_index, onehot, sigma, exclude_center: bool):
    """Subtract each atom's own Gaussian (if asked) and zero the padding atoms' multipoles.

    ``pot`` (N, A), ``field`` (N, A, 3), ``grad`` (N, A, 3, 3); ``onehot`` (N, A) species
    indicator; padding atoms have ``species_index < 0``.  Shared by the k-sum and PME routes.

    Example:
      >>> pot, field, grad = finish_multipoles(jnp.ones((2, 1)), jnp.ones((2, 1, 3)), jnp.ones((2, 1, 3, 3)),
      ...                                      jnp.array([0, -1]), jnp.array([[1.0], [0.0]]), 1.0, False)
      >>> pot.tolist(), float(grad[1].sum())
      ([[1.0], [0.0]], 0.0)
    """
    if exclude_center:
        v, g = self_multipoles(sigma, pot.dtype)
        pot = pot - onehot * v
        grad = grad - onehot[:, :, None, None] * g
    valid = species_index >= 0
    zero = jnp.zeros((), pot.dtype)
    return (jnp.where(valid[:, None], pot, zero), jnp.where(valid[:, None, None], field, zero),
            jnp.where(valid[:, None, None, None], grad, zero))


def lode_ksum_multipoles(positions, species_index, cell, sigma, kvectors, *, n_species: int,
                         exclude_center: bool = False):
    """Potential, field and field gradient of each species density at each atom (k-sum).

    ``V_a(R_i) = (4π/V) Σ_{k≠0} ψ(k) Σ_{j∈a} e^{ik·(R_i−R_j)}``, ``E = −∇V_a``,
    ``field_gradient[α, β] = ∂E_α/∂x_β = −∂_α∂_β V_a`` (uniform neutralising background per
    species, k = 0 dropped, so ``tr(field_gradient) = 4π(ρ_a(R_i) − N_a/V)``).

    Args:
      as :func:`lode_ksum` (no basis).

    Returns:
      ``(potential (N, A), field (N, A, 3), field_gradient (N, A, 3, 3))`` in e/Å, e/Å²,
      e/Å³ (multiply by k_e = 14.399645351950548 eV·Å/e² for V, V/Å, V/Å²).

    Example:
      >>> import numpy as np, jaxlr
      >>> cell = np.eye(3) * 6.0
      >>> kv = jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, ksum_cutoff(1.0, 1e-6)))
      >>> pot, field, grad = lode_ksum_multipoles(jnp.array([[0.0, 0, 0], [3.0, 3, 3]]), jnp.array([0, 0]),
      ...                                         jnp.asarray(cell), 1.0, kv, n_species=1)
      >>> pot.shape, field.shape, grad.shape
      ((2, 1), (2, 1, 3), (2, 1, 3, 3))
    """
    dtype = positions.dtype
    recip = 2.0 * math.pi * jnp.linalg.inv(cell).T
    volume = jnp.abs(jnp.linalg.det(cell))
    onehot = species_onehot(species_index, n_species, dtype)
    sigma = jnp.asarray(sigma, dtype)
    n = positions.shape[0]

    @jax.checkpoint
    def chunk(carry, m):
        k = m.astype(dtype) @ recip
        psi, _ = _psi(k, sigma)
        re, im = _structure(positions, onehot, k)
        pot = jnp.einsum("iac,c->ia", re, psi)
        field = jnp.einsum("iac,c,cx->iax", im, psi, k)
        grad = jnp.einsum("iac,c,cx,cy->iaxy", re, psi, k, k)
        return tuple(a + b for a, b in zip(carry, (pot, field, grad))), None

    init = (jnp.zeros((n, n_species), dtype), jnp.zeros((n, n_species, 3), dtype),
            jnp.zeros((n, n_species, 3, 3), dtype))
    (pot, field, grad), _ = jax.lax.scan(chunk, init, jnp.asarray(kvectors))
    scale = 8.0 * math.pi / volume
    return finish_multipoles(scale * pot, scale * field, scale * grad, species_index, onehot, sigma,
                             exclude_center)
