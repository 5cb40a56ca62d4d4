"""Error model of the periodic LODE routes (host, numpy) — what :func:`~jaxlr.tuning.tune_lode` uses.

Accuracy (the meaning of ``accuracy=`` in :func:`jaxlr.lode`): the relative
RMS error of all feature components,

    ε = ‖F − F_ref‖ / ‖F_ref‖      (Frobenius norms over atoms i, species a, n, l, m),

with F_ref the converged features.  It is dominated by the large low-l features; the
error of a small high-l block relative to its own size is larger.

The model evaluates numerator and denominator for N atoms of the given cell at
uncorrelated random positions (an ideal gas of number density ρ = N/V), with
``ĉ_nlm(k) = 16π² e^{−σ_L²k²/2}/k² · J_nl(k) S_lm(k)`` the k-space coefficient of the features
(:mod:`jaxlr.features`; J_nl = I_nl/k^l, S_lm = k^l Y_lm the solid harmonics):

* the norm per atom: ``‖F‖²/N = Σ_n |(1/V) Σ_{k≠0} ĉ_n00(k)|² + ρ (1/V) Σ_{k≠0} Σ_nlm |ĉ_nlm(k)|²``
  — the atom's own Gaussian and its images (coherent over k, l = 0 only), plus the
  uncorrelated sum over the other atoms (lattice sum near k = 0, an integral beyond);
* the k-sum (cutoff k_c) misses the same two sums over |k| > k_c;
* smooth PME (cardinal B-splines of order p, mesh K_d along the mesh-cell rows a_d,
  ξ_d = k·a_d/(2πK_d), alias vectors G_d = 2πK_d b_d) makes two kinds of error.  The
  interpolation of the l-th derivative at atom i picks up the aliases k + sG_d of every mesh
  wave with amplitude ``(ξ_d/(ξ_d + s))^p S_lm(k + sG_d)/S_lm(k)`` (order p − l in the mesh
  spacing; the origin of q = p − l), and the spreading of atom j the aliases k − sG_d with
  ``(ξ_d/(ξ_d − s))^p``; waves beyond the mesh Nyquist limit (|ξ_d| > ½) are lost.  For the
  other atoms these errors are uncorrelated (weight ρ); for the atom's own Gaussian they
  add up coherently over k into a position-dependent self term (the mesh "self force"),
  ``T_G = (1/(2π)³) ∫ d³k ĉ(k) [(ξ/(ξ+s))^p S(k+G)/S(k) + (ξ/(ξ−s))^p]``, which dominates
  at low density ρσ³.

Every integral is a fixed quadrature in |k| (Gauss–Legendre, :data:`K_NODES`) times
:data:`DIRECTIONS` directions — one estimate costs a few ms, so the tuner can search.
There is no fitted constant: against converged k-sums (``python
benchmarks/calibrate_lode_error.py --part model``: 11 random two-species cells and a
water-like box, σ_L = 0.5 … 2 Å, r_c = 2 … 20 Å, n_max = 3 … 6, cubic and triclinic,
p = 4 … 12, three to six mesh spacings each, L' = 0 … 4: about 1,000 errors from 1e-9 to
1e-1) ln(estimate/measured) has mean 0.02 and RMS 0.18, and lies in [−0.5, +0.8].
The estimate is for random positions: an ordered crystal or a liquid has smaller
long-wavelength density fluctuations, so its ‖F‖ — and its ε — may differ by a factor of
order one (the water-like box, random rigid molecules, is predicted to ±10 %).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..features._harmonics import solid_harmonics_numpy
from ..features._lode_kspace import bessel_reduced, radial_points
from ..features._radial import OVERLAP_POINTS, gto_primitives, radial_quadrature

__all__ = ["LodeErrorModel", "K_NODES", "DIRECTIONS", "LATTICE_TERMS"]

#: Gauss–Legendre nodes in ``|k|`` of the model's quadratures
K_NODES = 32
#: directions (Fibonacci sphere, equal weights) of the model's angular quadrature
DIRECTIONS = 50
#: at most this many reciprocal lattice vectors enter the norm as an explicit sum
LATTICE_TERMS = 20000
#: σ_L·k beyond which e^{−σ_L²k²/2} < 3e-18 (as :data:`jaxlr.features._lode_pme.K_NEGLIGIBLE`)
_K_NEGLIGIBLE = 9.0


def _directions(n: int) -> np.ndarray:
    """n nearly uniform unit vectors (Fibonacci sphere), (n, 3)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (1.0 + math.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@lru_cache(maxsize=16)
def _legendre_nodes(n: int):
    return np.polynomial.legendre.leggauss(n)


def _gauss(lo: float, hi: float, n: int):
    t, w = _legendre_nodes(n)
    return lo + 0.5 * (hi - lo) * (t + 1.0), 0.5 * (hi - lo) * w


class LodeErrorModel:
    """Relative RMS error estimates of the periodic LODE routes for one cell and basis (host).

    Args:
      cell: (3, 3) Å, rows are lattice vectors.  sigma: σ_L in Å.
      widths: (n_max,) GTO widths in Å.  cutoff: r_c in Å.  max_angular: L.
      n_atoms: number of (real) atoms in the cell (sets ρ = N/V).

    Attributes:
      norm2: the model's ‖F‖²/N (see the module docstring), (e/Å)²·Å³.

    Example:
      >>> import numpy as np
      >>> from jaxlr.features import gto_widths
      >>> m = LodeErrorModel(np.eye(3) * 8.0, 1.0, gto_widths(3.0, 3), 3.0, 2, 16)
      >>> m.pme(8, np.eye(3) * 8.0, (16, 16, 16)) < m.pme(8, np.eye(3) * 8.0, (12, 12, 12))
      True
      >>> 1e-7 < m.ksum(4.5) < 1e-6 < m.ksum(3.5)
      True
    """

    def __init__(self, cell, sigma: float, widths, cutoff: float, max_angular: int, n_atoms: int):
        self.cell = np.asarray(cell, dtype=np.float64)
        self.sigma = float(sigma)
        self.L = int(max_angular)
        self.volume = abs(float(np.linalg.det(self.cell)))
        self.rho = float(n_atoms) / self.volume
        self.k_max = _K_NEGLIGIBLE / self.sigma
        widths = np.asarray(widths, dtype=np.float64)
        # radial basis R_n on Gauss–Legendre nodes (numpy Löwdin transform, as radial.radial_transform)
        nodes, weights = radial_quadrature(cutoff, OVERLAP_POINTS)
        g = gto_primitives(nodes, widths, xp=np)
        s = (g * weights[:, None]).T @ g
        scales = 1.0 / np.sqrt(np.diag(s))
        lam, vec = np.linalg.eigh(s * scales[:, None] * scales[None, :])
        self._coefficients = (vec * lam**-0.5) @ vec.T
        self._scales = scales
        self._widths = widths
        r, w = radial_quadrature(cutoff, radial_points(cutoff, self.k_max))
        self._r = r
        self._wr = w[:, None] * self._radial(r)                                   # (Q, n)
        self._ls = np.arange(self.L + 1)
        self._lidx = np.repeat(self._ls, 2 * self._ls + 1)
        # quadrature of k-space: |k| nodes × directions
        k, wk = _gauss(0.0, self.k_max, K_NODES)
        self._k = k
        self._dirs = _directions(DIRECTIONS)
        self._kvec = k[:, None, None] * self._dirs[None, :, :]                    # (K, D, 3)
        self._J = self._reduced_integral(k)                                       # (K, n, L+1)
        self._base = 16.0 * math.pi**2 * np.exp(-0.5 * self.sigma**2 * k**2) / (k * k)
        # d³k/(2π)³ → radial weight × 4π/D
        self._wq = (wk * k * k * 4.0 * math.pi / DIRECTIONS / (2.0 * math.pi) ** 3)[:, None]   # (K, 1)
        self._solid = solid_harmonics_numpy(self._kvec, self.L)                           # (K, D, LM)
        # Σ_m |ĉ|² on the |k| nodes, per (n, l): base² J² (2l+1)/(4π) k^{2l}
        self._dens = (self._base**2)[:, None, None] * self._J**2 \
            * ((2 * self._ls + 1) / (4.0 * math.pi))[None, None, :] * k[:, None, None] ** (2 * self._ls)
        self.norm2 = self._norm2()

    # ---- radial pieces ------------------------------------------------------------------
    def _radial(self, r):
        return (gto_primitives(np.asarray(r, np.float64), self._widths, xp=np) * self._scales) @ self._coefficients.T

    def _reduced_integral(self, k):
        """J_nl(k) = ∫ R_n r^l g_l(kr) r² dr for k (M,): (M, n, L+1)."""
        g = bessel_reduced(np.asarray(k, np.float64)[:, None] * self._r[None, :], self.L, np)   # (M, Q, L+1)
        rl = self._r[:, None] ** self._ls[None, :]                                              # (Q, L+1)
        return np.einsum("mql,qn,ql->mnl", g, self._wr, rl)

    def _shell(self, lo: float, hi: float):
        """Radial integrals over lo < |k| < hi: (coherent Σ_n term (n,), incoherent Σ|ĉ|² scalar)."""
        if hi <= lo:
            return np.zeros(self._J.shape[1]), 0.0
        k, wk = _gauss(lo, hi, K_NODES)
        J = self._reduced_integral(k)
        base = 16.0 * math.pi**2 * np.exp(-0.5 * self.sigma**2 * k**2) / (k * k)
        meas = wk * 4.0 * math.pi * k * k / (2.0 * math.pi) ** 3
        coherent = np.einsum("k,k,kn->n", meas, base, J[:, :, 0]) / math.sqrt(4.0 * math.pi)
        dens = (base**2)[:, None, None] * J**2 * ((2 * self._ls + 1) / (4.0 * math.pi)) * k[:, None, None] ** (2 * self._ls)
        return coherent, float(np.einsum("k,knl->", meas, dens))

    def _norm2(self) -> float:
        recip = 2.0 * math.pi * np.linalg.inv(self.cell).T
        k1 = min(self.k_max, (6.0 * math.pi**2 * LATTICE_TERMS / self.volume) ** (1.0 / 3.0))
        widths = self.volume / np.array([np.linalg.norm(np.cross(self.cell[(d + 1) % 3], self.cell[(d + 2) % 3]))
                                         for d in range(3)])
        reach = np.floor(k1 * widths / (2.0 * math.pi)).astype(int) + 1
        grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"), -1).reshape(-1, 3)
        kn = np.linalg.norm(grid @ recip, axis=1)
        kn = kn[(kn > 0) & (kn < k1)]
        # J_nl is smooth on the scale 1/r_c: interpolate a fine table instead of evaluating every |k|
        table_k = np.linspace(0.0, k1, 1024)
        table = self._reduced_integral(table_k).reshape(len(table_k), -1)
        J = np.stack([np.interp(kn, table_k, col) for col in table.T], axis=-1).reshape((len(kn),) + self._J.shape[1:])
        base = 16.0 * math.pi**2 * np.exp(-0.5 * self.sigma**2 * kn**2) / (kn * kn)
        coherent = (base @ J[:, :, 0]) / (math.sqrt(4.0 * math.pi) * self.volume)
        dens = (base**2)[:, None, None] * J**2 * ((2 * self._ls + 1) / (4.0 * math.pi)) * kn[:, None, None] ** (2 * self._ls)
        incoherent = float(dens.sum()) / self.volume
        c_rest, i_rest = self._shell(k1, self.k_max)
        return float(np.sum((coherent + c_rest) ** 2) + self.rho * (incoherent + i_rest))

    # ---- estimates ----------------------------------------------------------------------------
    def ksum(self, k_cutoff: float) -> float:
        """Estimated relative RMS error of the k-sum with cutoff ``k_cutoff`` (1/Å)."""
        kc = float(k_cutoff)
        coherent, incoherent = self._shell(kc, max(self.k_max, 1.5 * kc))
        return math.sqrt(max(float(np.sum(coherent**2)) + self.rho * incoherent, 0.0) / self.norm2)

    def pme(self, order: int, mesh_cell, shape) -> float:
        """Estimated relative RMS error of smooth PME (optimal deconvolution).

        Args:
          order: spline order p.  mesh_cell: (3, 3) Å, the rows along which the mesh runs
            (``spec.basis @ cell``).  shape: (K1, K2, K3), integers or reals (the tuner
            searches with real mesh sizes before rounding).
        """
        p = int(order)
        shape = np.asarray(shape, dtype=np.float64)
        mesh_cell = np.asarray(mesh_cell, dtype=np.float64)
        xi = self._kvec @ mesh_cell.T / (2.0 * math.pi * shape)                   # (K, D, 3)
        inside = np.all(np.abs(xi) <= 0.5, axis=-1)                               # (K, D)
        xi = np.where(inside[..., None], xi, 0.0)
        alias = 2.0 * math.pi * np.linalg.inv(mesh_cell).T * shape[:, None]        # rows G_d
        knorm = self._k[:, None]
        ls2 = 2 * self._ls
        spread = np.zeros(inside.shape)
        gather = np.zeros(inside.shape + (self.L + 1,))
        self_terms = []
        jl = self._J[:, :, self._lidx]                                             # (K, n, LM)
        wq = self._wq * self._base[:, None]                                        # (K, 1)
        for d in range(3):
            x = xi[..., d]
            for s in (1, -1):                   # the ±2 aliases add < 2 % (p = 4) and far less above
                ratio = (x / (x + s)) ** p                                         # Û(k + sG)/Û(k)
                shifted = self._kvec + s * alias[d]
                gather += (ratio**2)[..., None] * (np.linalg.norm(shifted, axis=-1)[..., None] / knorm[..., None]) ** ls2
                spread += ratio**2
                # coherent self term of the alias G = s·G_d: gather at k + G, spread from k − G
                back = (x / (x - s)) ** p
                kernel = ratio[..., None] * solid_harmonics_numpy(shifted, self.L) + back[..., None] * self._solid
                self_terms.append(np.einsum("kd,knm,kdm->nm", wq * inside, jl, kernel))
        factor = np.where(inside[..., None], gather + spread[..., None], 1.0)      # lost waves: all of it
        incoherent = float(np.einsum("kd,knl,kdl->", self._wq * np.ones(inside.shape), self._dens, factor))
        lost = -np.einsum("kd,knm,kdm->nm", wq * ~inside, jl, self._solid)          # G = 0: missing waves
        coherent = sum(float(np.sum(t**2)) for t in self_terms) + float(np.sum(lost**2))
        return math.sqrt((self.rho * incoherent + coherent) / self.norm2)
