"""LODE features: three routes against independent references, invariances, derivatives.

References (none of them shares code with the route it checks):

* the spherical Bessel functions against ``scipy.special.spherical_jn``;
* the open-boundary pair function against a brute-force 2-D ``scipy.integrate.quad`` of
  the Funk–Hecke integral, and the whole open-boundary route against a 3-D product-grid
  quadrature of V_a(R_i + x) in numpy;
* the point-density limit (tiny σ_L) against the Laplace expansion
  1/|x − r| = Σ_l 4π/(2l+1) r_<^l/r_>^{l+1} Σ_m Y_lm(x̂)Y_lm(r̂), one 1-D radial quad per l;
* the periodic k-sum against the open-boundary route in a large cubic box, after adding
  the known background and image terms of the Ewald potential
  (−ξ/L + (2π/3L³)(|x − R_j|² + 3σ²), ξ = 2.837297…), remainder O(L⁻⁵);
* PME against the converged k-sum at the requested accuracy;
* multipoles: field-gradient trace = 4π(ρ_a − N_a/V), finite differences of the potential;
* featomic's LodeSphericalExpansion when it is installed.

Error measure throughout: relative RMS ‖F − F_ref‖/‖F_ref‖ over all entries.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation
from scipy.integrate import quad
from scipy.special import erf as np_erf
from scipy.special import eval_legendre, spherical_jn

import jaxlr
from jaxlr._api.lode import lode, lode_multipoles
from jaxlr.features._harmonics import real_spherical_harmonics, wigner_d_real
from jaxlr.features._lode import LodeParams, lode_features, multipole_features
from jaxlr.features._lode_direct import pair_radial_functions
from jaxlr.features._lode_kspace import (
    radial_points,
    reduced_radial_integral,
    spherical_bessel,
    spherical_bessel_reduced,
)
from jaxlr.features._lode_ksum import ksum_cutoff
from jaxlr.features._radial import gto_widths, radial_basis, radial_transform
from jaxlr.tuning._lode import multipole_pme_error, tune_lode

XI_CUBIC = 2.837297479480620   # Wigner constant of the simple cubic Ewald potential


def rel_rms(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


# --------------------------------------------------------------------------------------
# shared small systems (shapes reused so that compiled functions are shared)
# --------------------------------------------------------------------------------------
RC, NMAX, LMAX, SIGMA = 3.0, 3, 3, 1.0
Z = np.array([8, 1, 1, 8, 1, 1, 8, 1, 1, 1])


def periodic_system(seed=0, n=10, box=7.5, skew=0.12):
    rng = np.random.default_rng(seed)
    cell = box * (np.eye(3) + rng.uniform(-skew, skew, (3, 3)))
    frac = rng.uniform(0, 1, (n, 3))
    frac[:2] += 1.0                                  # a few unwrapped atoms
    return frac @ cell, Z[:n].copy(), cell


def cluster(seed=0, n=6, box=4.0, min_dist=1.0):
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(-box / 2, box / 2, 3)
        if all(np.linalg.norm(p - q) >= min_dist for q in pts):
            pts.append(p)
    return np.array(pts), Z[:n].copy()


def widths():
    return jnp.asarray(gto_widths(RC, NMAX))


_TRANSFORM = None


def np_radial(x):
    """R_n(x) in numpy, (len(x), NMAX): R_n = Σ_m C_nm s_m x^m exp(−x²/2σ_m²) (radial_transform)."""
    global _TRANSFORM
    if _TRANSFORM is None:
        c, s = radial_transform(widths(), RC)
        _TRANSFORM = (np.asarray(c), np.asarray(s))
    c, s = _TRANSFORM
    x = np.atleast_1d(np.asarray(x, float))[:, None]
    w = np.asarray(gto_widths(RC, NMAX))
    g = x ** np.arange(NMAX) * np.exp(-x * x / (2 * w * w)) * s
    return g @ c.T


def test_numpy_radial_matches_library():
    x = np.linspace(0, 4, 9)
    np.testing.assert_allclose(np_radial(x), radial_basis(jnp.asarray(x), widths(), RC), rtol=1e-13, atol=1e-14)


@pytest.fixture(scope="module")
def ksum_reference():
    """Converged k-sum (1e-12) of the periodic system: (positions, species, cell, values)."""
    R, sp, cell = periodic_system()
    res = lode(R, sp, cell=cell, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA, method="ksum",
               accuracy=1e-12)
    return R, sp, cell, np.asarray(res.values)


# --------------------------------------------------------------------------------------
# radial building blocks
# --------------------------------------------------------------------------------------
def test_spherical_bessel_against_scipy():
    z = np.concatenate([[0.0, 1e-8, 1e-3], np.linspace(0.01, 40.0, 2001), [80.0, 150.0]])
    j = np.asarray(jax.jit(lambda x: spherical_bessel(x, 12))(jnp.asarray(z)))
    for l in range(13):
        np.testing.assert_allclose(j[:, l], spherical_jn(l, z), rtol=0, atol=3e-15)
    g = np.asarray(spherical_bessel_reduced(jnp.asarray([0.0]), 3))[0]
    np.testing.assert_allclose(g, [1.0, 1 / 3, 1 / 15, 1 / 105], rtol=1e-15)
    # g_l' = −z g_{l+1} (the identity the Hermite table relies on), finite at z = 0
    dg = jax.jit(jax.vmap(jax.grad(lambda x: spherical_bessel_reduced(x, 4)[2])))(jnp.asarray(z[:50]))
    np.testing.assert_allclose(dg, -z[:50] * np.asarray(spherical_bessel_reduced(jnp.asarray(z[:50]), 4))[:, 3],
                               rtol=1e-10, atol=1e-15)


def test_radial_integral_against_quad():
    """I_nl(k) = k^l J_nl(k) against scipy quad, and the node count rule is converged."""
    w = widths()
    ks = np.array([0.0, 0.3, 2.0, 7.5])
    n_points = radial_points(RC, 8.0)
    J, J2 = (np.asarray(jax.jit(lambda k, n=n: reduced_radial_integral(k, w, cutoff=RC, max_angular=4, n_points=n))(
        jnp.asarray(ks))) for n in (n_points, 2 * n_points))
    np.testing.assert_allclose(J, J2, rtol=0, atol=1e-14)
    for ik, k in enumerate(ks):
        for n in range(NMAX):
            for l in (0, 1, 4):
                ref = quad(lambda r: np_radial(r)[0, n] * spherical_jn(l, k * r) * r * r, 0, RC, epsabs=1e-14)[0]
                np.testing.assert_allclose(J[ik, n, l] * k**l, ref, rtol=0, atol=1e-12)


_pair_fn = jax.jit(lambda r, s, w: pair_radial_functions(r, s, w, cutoff=RC, max_angular=3))


@pytest.mark.parametrize("sigma,d", [(0.05, 0.7), (0.05, 2.5), (0.5, 1.2), (1.5, 4.0)])
def test_pair_function_against_2d_quadrature(sigma, d):
    """Φ_nl(d) = ∫ R_n x² 2π ∫ v(|x − d ẑ|) P_l(t) dt dx by nested adaptive quadrature."""
    phi = np.asarray(_pair_fn(jnp.asarray([d]), sigma, widths()))[0]
    for n, l in [(0, 0), (2, 1), (1, 3)]:
        def h(x):
            def f(t):
                s = math.sqrt(max(x * x + d * d - 2 * x * d * t, 0.0))
                return (np_erf(s / (math.sqrt(2) * sigma)) / s if s > 0 else math.sqrt(2 / math.pi) / sigma) \
                    * eval_legendre(l, t)
            return 2 * math.pi * quad(f, -1, 1, limit=200, epsabs=1e-13, epsrel=1e-12)[0]
        ref = quad(lambda x: np_radial(x)[0, n] * x * x * h(x), 0, RC, points=[d] if d < RC else None,
                   limit=200, epsabs=1e-12)[0]
        np.testing.assert_allclose(phi[n, l], ref, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------
# open boundary
# --------------------------------------------------------------------------------------
def point_limit_reference(R, sp, species, exclude_center=False):
    """Σ_{j∈a} projection of 1/|x − r_ij| by the Laplace expansion, one quad per (n, l, d)."""
    n_at = len(R)
    out = np.zeros((n_at, len(species), NMAX, (LMAX + 1) ** 2))
    cache = {}

    def radial(n, l, d):
        key = (n, l, round(d, 14))
        if key not in cache:
            if d == 0.0:
                val = 4 * math.pi * quad(lambda x: np_radial(x)[0, n] * x, 0, RC, epsabs=1e-14)[0] if l == 0 else 0.0
            else:
                def f(x):
                    lo, hi = min(x, d), max(x, d)
                    return np_radial(x)[0, n] * x * x * lo**l / hi ** (l + 1)
                val = 4 * math.pi / (2 * l + 1) * quad(f, 0, RC, points=[d] if d < RC else None,
                                                       epsabs=1e-14, limit=200)[0]
            cache[key] = val
        return cache[key]

    for i in range(n_at):
        for j in range(n_at):
            if exclude_center and i == j:
                continue
            rij = R[j] - R[i]
            d = float(np.linalg.norm(rij))
            y = np.asarray(real_spherical_harmonics(jnp.asarray(rij), LMAX))
            a = species.index(sp[j])
            for n in range(NMAX):
                for l in range(LMAX + 1):
                    sl = slice(l * l, (l + 1) ** 2)
                    out[i, a, n, sl] += radial(n, l, d) * y[sl]
    return out


@pytest.mark.parametrize("exclude_center", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_point_density_limit(exclude_center):
    """σ_L → 0: features → projection of Σ_j 1/|x − r_ij|; the first correction is
    −2πσ² Σ_{j: r_ij < r_c} R_n(r_ij) Y_lm(r̂_ij) (the Gaussian minus the point potential is
    a δ-like source of weight −2πσ², seen only when it lies inside the sphere)."""
    R, sp = cluster(1)
    ref = point_limit_reference(R, list(sp), [1, 8], exclude_center)
    res = lode(R, sp, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=1e-3, exclude_center=exclude_center)
    assert res.params.method == "direct" and res.species == (1, 8)
    assert rel_rms(res.values, ref) < 2e-6
    sigma = 0.01       # the nearest |r_ij − r_c| is 6σ: no Gaussian straddles the sphere
    res = lode(R, sp, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=sigma, exclude_center=exclude_center)
    first = np.zeros_like(ref)
    for i in range(len(R)):
        for j in range(len(R)):
            if exclude_center and i == j:
                continue
            rij = R[j] - R[i]
            if np.linalg.norm(rij) > RC:
                continue
            y = np.asarray(real_spherical_harmonics(jnp.asarray(rij), LMAX))
            first[i, [1, 8].index(sp[j])] += np_radial(np.linalg.norm(rij))[0][:, None] * y[None, :]
    corrected = ref - 2 * math.pi * sigma**2 * first
    assert rel_rms(res.values, ref) > 3e-5                   # the σ² term is visible …
    assert rel_rms(res.values, corrected) < 1e-6             # … and it is the right one (rest O(σ⁴))


def test_direct_against_3d_quadrature():
    """The open-boundary route equals a brute-force product-grid quadrature of V_a(R_i + x)."""
    R, sp = cluster(2, n=4)
    sigma = 0.7
    res = lode(R, sp, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=sigma)
    t, wt = np.polynomial.legendre.leggauss(48)
    r = 0.5 * RC * (t + 1)
    wr = 0.5 * RC * wt * r * r
    ct, wct = np.polynomial.legendre.leggauss(40)
    ph = np.arange(80) * 2 * np.pi / 80
    st = np.sqrt(1 - ct**2)
    dirs = np.stack([np.outer(st, np.cos(ph)), np.outer(st, np.sin(ph)), np.outer(ct, np.ones_like(ph))], -1)
    dirs = dirs.reshape(-1, 3)
    wdir = np.repeat(wct, 80) * 2 * np.pi / 80
    y = np.asarray(real_spherical_harmonics(jnp.asarray(dirs), LMAX))            # (D, LM)
    rad = np_radial(r)                                                             # (Q, n)
    ref = np.zeros_like(np.asarray(res.values))
    for i in range(len(R)):
        x = R[i] + r[:, None, None] * dirs[None]                                   # (Q, D, 3)
        for j in range(len(R)):
            s = np.linalg.norm(x - R[j], axis=-1)
            v = np_erf(s / (math.sqrt(2) * sigma)) / s
            ref[i, [1, 8].index(sp[j])] += np.einsum("q,qn,qd,d,dk->nk", wr, rad, v, wdir, y)
    assert rel_rms(res.values, ref) < 1e-8


@pytest.mark.parametrize("box", [40.0, pytest.param(30.0, marks=pytest.mark.slow)])
def test_periodic_equals_open_in_large_box(box):
    """k-sum in a cubic box = open boundary + Ewald background/image terms + O(L⁻⁵)."""
    R, sp = cluster(3, n=6, box=3.0)
    sigma = 0.8
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=sigma)
    open_ = np.asarray(lode(R, sp, **kw).values)
    per = np.asarray(lode(R, sp, cell=np.eye(3) * box, method="ksum", accuracy=1e-9, **kw).values)
    rq = np.linspace(0, RC, 4001)
    rad = np_radial(rq)
    mom = [np.trapezoid(rad * rq[:, None] ** (2 + k), rq, axis=0) for k in range(3)]   # ∫R_n r^{2+k} dr
    vol = box**3
    corr = np.zeros_like(per)
    for i in range(len(R)):
        for j in range(len(R)):
            a = [1, 8].index(sp[j])
            d = R[i] - R[j]
            c0 = -XI_CUBIC / box + 2 * math.pi / (3 * vol) * (d @ d + 3 * sigma**2)
            corr[i, a, :, 0] += math.sqrt(4 * math.pi) * (c0 * mom[0] + 2 * math.pi / (3 * vol) * mom[2])
            for col, axis in ((1, 1), (2, 2), (3, 0)):       # l = 1 is (y, z, x)
                corr[i, a, :, col] += math.sqrt(4 * math.pi / 3) * 4 * math.pi / (3 * vol) * d[axis] * mom[1]
    resid = np.abs(per - open_ - corr).max()
    assert np.abs(per - open_).max() > 1.0                 # the background terms are large …
    assert resid < 0.3 * (40.0 / box) ** 5 * 1e-3          # … and what is left is O(L⁻⁵) (7e-5 at L = 40)


# --------------------------------------------------------------------------------------
# periodic: k-sum reference and PME
# --------------------------------------------------------------------------------------
# The accuracy contract of the tuner (same standard as the Coulomb tuner): the achieved
# relative RMS error against a converged k-sum lies within a factor 3 of the request,
# 1/3 ≤ achieved/requested ≤ 3 (measured 0.4 … 1.7, benchmarks/calibrate_lode_error.py).
BAND = (1.0 / 3.0, 3.0)


def within_band(err, accuracy):
    return BAND[0] <= err / accuracy <= BAND[1]


@pytest.mark.parametrize("method", ["pme", "ksum"])
@pytest.mark.parametrize("accuracy", [1e-3, 1e-4, 1e-5])
def test_tuner_accuracy(ksum_reference, method, accuracy):
    """Triclinic cell, L = 1 (the first 4 (l, m) columns of the L = 3 reference): the tuned
    PME mesh and the tuned k-sum cutoff achieve the request within a factor 3 (one small
    compilation per case; L = 2 … 4 and a cubic cell in the slow tests)."""
    R, sp, cell, ref = ksum_reference
    kw = dict(cell=cell, cutoff=RC, max_radial=NMAX, max_angular=1, sigma=SIGMA, method=method)
    res = lode(R, sp, accuracy=accuracy, **kw)
    assert res.params.estimated_error <= accuracy
    err = rel_rms(res.values, ref[..., :4])
    assert within_band(err, accuracy), (err, res.params)
    if method == "ksum" and accuracy == 1e-5:      # the conservative rule stays below its target
        rule = lode(R, sp, accuracy=accuracy, k_cutoff=ksum_cutoff(SIGMA, accuracy), **kw)
        assert rel_rms(rule.values, ref[..., :4]) < accuracy


@pytest.mark.parametrize("accuracy", [pytest.param(1e-4, marks=pytest.mark.slow), 1e-6])
def test_pme_matches_ksum(ksum_reference, accuracy):
    """Triclinic cell, L = 3: the tuned PME mesh achieves the requested accuracy within a factor 3."""
    R, sp, cell, ref = ksum_reference
    res = lode(R, sp, cell=cell, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA, accuracy=accuracy)
    assert res.params.method == "pme" and res.params.estimated_error <= accuracy
    err = rel_rms(res.values, ref)
    assert within_band(err, accuracy), (err, res.params.mesh)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pme", "ksum"])
def test_tuner_accuracy_cubic_and_other_basis(method):
    """A cubic cell, and a triclinic one with another σ_L, r_c and L: achieved within a
    factor 3 of the request for 1e-3 … 1e-6."""
    for seed, skew, sigma, rc, lmax in ((1, 0.0, 1.0, RC, LMAX), (2, 0.1, 0.6, 4.0, 2)):
        R, sp, cell = periodic_system(seed, skew=skew)
        kw = dict(cell=cell, cutoff=rc, max_radial=NMAX, max_angular=lmax, sigma=sigma)
        ref = np.asarray(lode(R, sp, method="ksum", accuracy=1e-12, **kw).values)
        for accuracy in (1e-3, 1e-4, 1e-5, 1e-6):
            res = lode(R, sp, method=method, accuracy=accuracy, **kw)
            err = rel_rms(res.values, ref)
            assert within_band(err, accuracy), (seed, accuracy, err, res.params)


@pytest.mark.slow
def test_pme_exclude_center_and_influence(ksum_reference):
    """exclude_center subtracts exactly the own-Gaussian projection (same in every route);
    the SPME deconvolution works too."""
    R, sp, cell, ref = ksum_reference
    kw = dict(cell=cell, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    base = lode(R, sp, accuracy=1e-6, **kw)
    ex = lode(R, sp, accuracy=1e-6, exclude_center=True, **kw)
    diff = np.asarray(base.values - ex.values)
    Rc, spc = cluster(1)
    open_diff = np.asarray(lode(Rc, spc, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA).values
                           - lode(Rc, spc, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA,
                                  exclude_center=True).values)
    # √(4π) ∫ R_n x erf(x/√2σ) dx with σ = SIGMA = 1
    own = np.array([math.sqrt(4 * math.pi) * quad(lambda x: np_radial(x)[0, n] * x * np_erf(x / math.sqrt(2)),
                                                  0, RC, epsabs=1e-14)[0] for n in range(NMAX)])
    for i, z in enumerate(sp):
        expect = np.zeros(diff.shape[1:])
        expect[[1, 8].index(z), :, 0] = own
        np.testing.assert_allclose(diff[i], expect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(open_diff[0, [1, 8].index(spc[0]), :, 0], own, rtol=1e-12, atol=1e-13)
    spec = base.params.mesh._replace(influence="spme")
    spme = lode(R, sp, mesh=spec, **kw)
    assert rel_rms(spme.values, ref) < 1e-5


# --------------------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------------------
def rotate(values, rot):
    d = wigner_d_real(rot, LMAX)
    return np.einsum("pq,...q->...p", d, np.asarray(values))


def test_rotation_open_and_periodic(ksum_reference):
    """Rotating the atoms (and the cell) transforms each l block with the real Wigner D."""
    rot = random_rotation(5)
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    Rc, spc = cluster(1)
    a = lode(Rc, spc, **kw).values
    b = lode(Rc @ rot.T, spc, **kw).values
    np.testing.assert_allclose(b, rotate(a, rot), rtol=0, atol=1e-11)
    R, sp, cell, ref = ksum_reference
    a = lode(R, sp, cell=cell, accuracy=1e-6, **kw)
    b = lode(R @ rot.T, sp, cell=cell @ rot.T, params=a.params, **kw)
    # the PME mesh rotates with the cell: exact covariance, not just to the mesh accuracy
    np.testing.assert_allclose(b.values, rotate(a.values, rot), rtol=0, atol=1e-11)
    k = lode(R @ rot.T, sp, cell=cell @ rot.T, method="ksum", accuracy=1e-12, **kw)
    assert rel_rms(k.values, rotate(ref, rot)) < 1e-12


def test_translation_and_permutation(ksum_reference):
    R, sp, cell, ref = ksum_reference
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    shift = np.array([0.37, -1.3, 2.9])
    perm = np.random.default_rng(0).permutation(len(R))
    k = lode(R[perm] + shift, sp[perm], cell=cell, method="ksum", accuracy=1e-12, **kw).values
    assert rel_rms(k, ref[perm]) < 1e-12
    p0 = lode(R, sp, cell=cell, accuracy=1e-6, **kw)
    p1 = lode(R[perm] + shift, sp[perm], cell=cell, params=p0.params, **kw)
    # the mesh is not translation invariant: two evaluations differ by up to twice the error
    # (≤ 3 × 1e-6 each by the tuner's contract)
    assert rel_rms(p1.values, np.asarray(p0.values)[perm]) < 6e-6
    Rc, spc = cluster(1)
    permc = np.random.default_rng(1).permutation(len(Rc))
    a = lode(Rc, spc, **kw).values
    b = lode(Rc[permc] + shift, spc[permc], **kw).values
    np.testing.assert_allclose(b, np.asarray(a)[permc], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_padding_and_vmap_pme():
    """Padding atoms contribute nothing; vmap over padded structures = loop (PME and direct)."""
    R1, sp1, cell1 = periodic_system(0)
    R2, sp2, cell2 = periodic_system(1, n=7, box=7.0)
    n = 10
    params = tune_lode(cell1, SIGMA, cutoff=RC, max_radial=NMAX, max_angular=LMAX, n_species=2, accuracy=1e-5)
    idx1 = np.where(sp1 == 1, 0, 1).astype(np.int32)
    idx2 = np.full(n, -1, np.int32)
    idx2[:7] = np.where(sp2 == 1, 0, 1)
    P2 = np.concatenate([R2, np.random.default_rng(9).uniform(0, 7, (3, 3))])
    batch_R = jnp.asarray(np.stack([R1, P2]))
    batch_i = jnp.asarray(np.stack([idx1, idx2]))
    batch_c = jnp.asarray(np.stack([cell1, cell2]))
    w = widths()

    def f(r, i, c):
        return lode_features(r, i, sigma=SIGMA, widths=w, params=params, cell=c)

    out = jax.jit(jax.vmap(f))(batch_R, batch_i, batch_c)
    one = lode(R2, sp2, cell=cell2, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA, params=params,
               species_list=[1, 8])
    np.testing.assert_allclose(out[1, :7], one.values, rtol=0, atol=1e-13)
    assert np.all(np.asarray(out[1, 7:]) == 0.0)
    np.testing.assert_allclose(out[0], jax.jit(f)(batch_R[0], batch_i[0], batch_c[0]), rtol=0, atol=1e-13)
    # front door with atom_mask; open boundary padded
    masked = lode(P2, np.concatenate([sp2, [8, 8, 8]]), cell=cell2, cutoff=RC, max_radial=NMAX,
                  max_angular=LMAX, sigma=SIGMA, params=params, atom_mask=np.arange(n) < 7, species_list=[1, 8])
    np.testing.assert_allclose(masked.values[:7], one.values, rtol=0, atol=1e-13)


def test_padding_and_vmap_direct():
    """Open boundary: padded structures under vmap = each structure alone; padding atoms
    (anywhere, even on top of real ones) contribute nothing and get zero features."""
    R1, sp1 = cluster(1)
    R2, sp2 = cluster(2, n=4)
    P2 = np.concatenate([R2, R2[:2] + 1e-3])
    idx1 = np.where(sp1 == 1, 0, 1).astype(np.int32)
    idx2 = np.concatenate([np.where(sp2 == 1, 0, 1), [-1, -1]]).astype(np.int32)
    params = LodeParams("direct", cutoff=RC, max_radial=NMAX, max_angular=LMAX, n_species=2)
    w = widths()
    out = jax.jit(jax.vmap(lambda r, i: lode_features(r, i, sigma=SIGMA, widths=w, params=params)))(
        jnp.asarray(np.stack([R1, P2])), jnp.asarray(np.stack([idx1, idx2])))
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    np.testing.assert_allclose(out[0], lode(R1, sp1, **kw).values, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out[1, :4], lode(R2, sp2, **kw).values, rtol=0, atol=1e-13)
    assert np.all(np.asarray(out[1, 4:]) == 0.0)
    masked = lode(P2, np.concatenate([sp2, [1, 8]]), atom_mask=np.arange(6) < 4, **kw)
    np.testing.assert_allclose(masked.values[:4], out[1, :4], rtol=0, atol=1e-13)
    # multipoles: same padding contract
    mp = jax.vmap(lambda r, i: multipole_features(r, i, sigma=SIGMA, params=params))(
        jnp.asarray(np.stack([R1, P2])), jnp.asarray(np.stack([idx1, idx2])))
    alone = lode_multipoles(R2, sp2, sigma=SIGMA)
    np.testing.assert_allclose(mp[0][1, :4], alone.potential, rtol=1e-13)
    np.testing.assert_allclose(mp[2][1, :4], alone.field_gradient, rtol=1e-12, atol=1e-14)
    assert np.all(np.asarray(mp[1][1, 4:]) == 0.0)


def test_pair_table_against_the_quadrature():
    """The Hermite table of Φ_nl(r) (jaxlr.features._lode_table) against the per-pair
    quadrature: values ≤ 1e-9 and r-derivatives ≤ 1e-6 of their largest magnitude for
    0.3 Å ≤ r ≤ far beyond the tabulated range, where the tail A/r^{l+1} is exact; a
    table twice as fine is ~16× more accurate (cubic Hermite, h⁴)."""
    from jaxlr.features._lode_table import direct_table_size, pair_table
    from jaxlr.features._pair_table import interpolate_pair_table

    w = widths()
    r = jnp.asarray(np.concatenate([np.linspace(0.3, RC + 14 * SIGMA, 1201), [25.0, 60.0]]))

    def exact(x):
        return pair_radial_functions(x, SIGMA, w, cutoff=RC, max_angular=LMAX)

    ref, dref = jax.jvp(exact, (r,), (jnp.ones_like(r),))
    n_table = direct_table_size(SIGMA, w, RC)
    errors = []
    for size in (n_table // 2, n_table):
        table = pair_table(SIGMA, w, cutoff=RC, max_angular=LMAX, n_table=size)
        val, der = jax.jvp(lambda x: interpolate_pair_table(table, x), (r,), (jnp.ones_like(r),))
        errors.append(float(jnp.max(jnp.abs(val - ref)) / jnp.max(jnp.abs(ref))))
        slope_error = float(jnp.max(jnp.abs(der - dref)) / jnp.max(jnp.abs(dref)))
    assert errors[1] <= 1e-9 and slope_error <= 1e-6, (errors, slope_error)
    assert errors[0] / errors[1] > 8.0, errors
    assert float(r[-1]) > float(table.r_far)     # the tail is covered


def test_tabulated_direct_lode_equals_the_quadrature():
    """LodeParams("direct", n_table=...) — what the models use — gives the features, their
    position gradient and their σ_L gradient (traced σ_L: the table is built in the trace)
    of the per-pair quadrature to ≤ 1e-9 / 1e-7 relative; padding rules are unchanged."""
    from jaxlr.features import direct_table_size

    R, sp = cluster(3, n=6)
    idx = jnp.asarray(np.where(sp == 1, 0, 1).astype(np.int32))
    w = widths()
    base = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, n_species=2)
    exact = LodeParams("direct", **base)
    tab = LodeParams("direct", n_table=direct_table_size(SIGMA, w, RC), **base)

    def features(params, x, sigma=SIGMA):
        return lode_features(x, idx, sigma=sigma, widths=w, params=params)

    ref = np.asarray(jax.jit(lambda x: features(exact, x))(jnp.asarray(R)))
    out = np.asarray(jax.jit(lambda x: features(tab, x))(jnp.asarray(R)))
    assert rel_rms(out, ref) <= 1e-9
    grad = jax.jit(jax.grad(lambda x, p: jnp.sum(jnp.sin(features(p, x))), argnums=0), static_argnums=1)
    g_ref, g_tab = np.asarray(grad(jnp.asarray(R), exact)), np.asarray(grad(jnp.asarray(R), tab))
    assert rel_rms(g_tab, g_ref) <= 1e-7
    dsig = jax.jit(jax.grad(lambda s, p: jnp.sum(jnp.sin(features(p, jnp.asarray(R), s))), argnums=0),
                   static_argnums=1)
    d_ref, d_tab = float(dsig(SIGMA, exact)), float(dsig(SIGMA, tab))
    assert abs(d_tab - d_ref) <= 1e-7 * abs(d_ref), (d_tab, d_ref)


def _coincident_padding():
    """A 5-atom cluster with a real atom at the origin, and the same plus 3 padding atoms at
    the origin (on top of each other and of the real atom) with valid species channels."""
    R, sp = cluster(1, n=5)
    R = R - R[2]
    idx = np.where(sp == 1, 0, 1).astype(np.int32)
    P = np.concatenate([R, np.zeros((3, 3))])
    pad_idx = np.concatenate([idx, [0, 1, 0]]).astype(np.int32)     # valid channels: the mask decides
    return R, sp, idx, P, pad_idx, np.arange(8) < 5


_MASK_PARAMS = LodeParams("direct", cutoff=RC, max_radial=2, max_angular=1, n_species=2)   # small: fast compiles


@jax.jit
def _masked_values_and_grad(r, i, m):
    w = jnp.asarray(gto_widths(RC, 2))

    def f(x):
        return lode_features(x, i, sigma=SIGMA, widths=w, params=_MASK_PARAMS, atom_mask=m)

    return f(r), jax.grad(lambda x: jnp.sum(f(x) ** 2))(r)


def test_direct_atom_mask_coincident_padding():
    """Open boundary with ``atom_mask``: real rows equal the unpadded features, padding rows
    are exactly 0, and jax.grad (positions) is finite and does not depend on where the
    padding sits (on top of each other and of a real atom, or far apart); 0 on padding.
    (The gradient of the unpadded 5-atom system itself: the slow test below.)"""
    R, _, idx, P, pad_idx, mask = _coincident_padding()
    ref = np.asarray(jax.jit(lambda r, i: lode_features(r, i, sigma=SIGMA, widths=jnp.asarray(gto_widths(RC, 2)),
                                                        params=_MASK_PARAMS))(jnp.asarray(R), jnp.asarray(idx)))
    out, g = (np.asarray(a) for a in _masked_values_and_grad(jnp.asarray(P), jnp.asarray(pad_idx), jnp.asarray(mask)))
    np.testing.assert_allclose(out[:5], ref, rtol=0, atol=1e-12)
    assert np.all(out[5:] == 0.0)
    assert np.all(np.isfinite(g)) and np.all(g[5:] == 0.0)
    far = P.copy()
    far[5:] = [[1e4, 0, 0], [2e4, 0, 0], [3e4, 0, 0]]
    _, g_far = _masked_values_and_grad(jnp.asarray(far), jnp.asarray(pad_idx), jnp.asarray(mask))
    np.testing.assert_allclose(g[:5], np.asarray(g_far)[:5], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_direct_atom_mask_front_door_and_multipoles():
    """The same padding: gradient = that of the unpadded system; the front door's
    atom_mask; the multipoles."""
    R, sp, idx, P, pad_idx, mask = _coincident_padding()
    _, g = _masked_values_and_grad(jnp.asarray(P), jnp.asarray(pad_idx), jnp.asarray(mask))
    _, g_ref = _masked_values_and_grad(jnp.asarray(R), jnp.asarray(idx), jnp.ones(5, bool))
    np.testing.assert_allclose(np.asarray(g)[:5], g_ref, rtol=0, atol=1e-12)
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    ref = np.asarray(lode(R, sp, **kw).values)
    front = lode(P, np.concatenate([sp, [1, 8, 1]]), atom_mask=mask, **kw).values
    np.testing.assert_allclose(front[:5], ref, rtol=0, atol=1e-12)
    assert np.all(np.asarray(front[5:]) == 0.0)
    params = LodeParams("direct", cutoff=RC, max_radial=NMAX, max_angular=LMAX, n_species=2)
    mp = jax.jit(lambda r, i, m: multipole_features(r, i, sigma=SIGMA, params=params, atom_mask=m))
    gm = jax.grad(lambda r: sum(jnp.sum(a) for a in mp(r, jnp.asarray(pad_idx), jnp.asarray(mask))))(jnp.asarray(P))
    gm_ref = jax.grad(lambda r: sum(jnp.sum(a) for a in mp(r, jnp.asarray(idx), None)))(jnp.asarray(R))
    assert np.all(np.isfinite(gm)) and np.all(np.asarray(gm[5:]) == 0.0)
    np.testing.assert_allclose(gm[:5], gm_ref, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_float32_pme_and_front_door_grad(ksum_reference):
    """PME in float32 stays within its error budget; jax.grad through the eager front door."""
    R, sp, cell, ref = ksum_reference
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    out = lode(jnp.asarray(R, jnp.float32), sp, cell=jnp.asarray(cell, jnp.float32), accuracy=1e-5, **kw)
    assert out.values.dtype == jnp.float32
    # budget: the mesh error (≤ 3 × 1e-5, the tuner's contract) plus float32 round-off of
    # O(1) features (~1e-6)
    assert rel_rms(out.values, ref) < 3.5e-5
    Rc, spc = cluster(1, n=4)
    g = jax.grad(lambda r: jnp.sum(lode(r, spc, **kw).values ** 2))(jnp.asarray(Rc))
    h = 1e-5
    e = np.zeros_like(Rc)
    e[1, 2] = 1.0
    fd = (jnp.sum(lode(Rc + h * e, spc, **kw).values ** 2) - jnp.sum(lode(Rc - h * e, spc, **kw).values ** 2)) / (2 * h)
    np.testing.assert_allclose(g[1, 2], fd, rtol=1e-6)


# --------------------------------------------------------------------------------------
# derivatives
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [pytest.param("direct", marks=pytest.mark.slow),
                                    pytest.param("ksum", marks=pytest.mark.slow), "pme"])
def test_gradients_against_finite_differences(method):
    """∂/∂positions, ∂/∂cell, ∂/∂σ_L, ∂/∂widths of a random projection of the features,
    against central differences along random directions (one compiled gradient)."""
    rng = np.random.default_rng(4)
    if method == "direct":
        R, sp = cluster(1, n=4)
        cell = np.eye(3)          # unused
    else:
        R, sp, cell = periodic_system(2, n=5, box=6.0)
    idx = jnp.asarray(np.where(sp == 1, 0, 1).astype(np.int32))
    L = 2
    if method == "direct":
        params = LodeParams("direct", cutoff=RC, max_radial=NMAX, max_angular=L, n_species=2)
        kv = None
    else:
        params = tune_lode(cell, SIGMA, cutoff=RC, max_radial=NMAX, max_angular=L, n_species=2, method=method,
                           accuracy=1e-5)
        kv = jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, params.k_cutoff)) if method == "ksum" else None
    proj = jnp.asarray(rng.normal(size=(len(R), 2, NMAX, (L + 1) ** 2)))

    def feat(r, c, s, w):
        c = None if method == "direct" else c
        return jnp.sum(proj * lode_features(r, idx, sigma=s, widths=w, params=params, cell=c, kvectors=kv))

    args = [jnp.asarray(R), jnp.asarray(cell), jnp.asarray(SIGMA), widths()]
    grads = jax.jit(jax.grad(feat, argnums=(0, 1, 2, 3)))(*args)
    fwd = jax.jit(feat)
    h = 1e-5
    for k, g in enumerate(grads):
        if method == "direct" and k == 1:
            continue
        direction = jnp.asarray(rng.normal(size=np.shape(args[k])))
        plus = [a + h * direction if m == k else a for m, a in enumerate(args)]
        minus = [a - h * direction if m == k else a for m, a in enumerate(args)]
        fd = (fwd(*plus) - fwd(*minus)) / (2 * h)
        np.testing.assert_allclose(float(jnp.sum(g * direction)), float(fd), rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------
# multipoles
# --------------------------------------------------------------------------------------
def test_multipoles_open_boundary():
    """Direct multipoles: potential = Σ erf(r/√2σ)/r, field and gradient = finite differences."""
    R, sp = cluster(1)
    sigma = 0.6
    m = lode_multipoles(R, sp, sigma=sigma)
    rho_trace = np.zeros((len(R), 2))
    for i in range(len(R)):
        def pot(x, a):
            out = 0.0
            for j in range(len(R)):
                if [1, 8].index(sp[j]) != a:
                    continue
                s = np.linalg.norm(x - R[j])
                out += np_erf(s / (math.sqrt(2) * sigma)) / s if s > 0 else math.sqrt(2 / math.pi) / sigma
            return out
        for a in range(2):
            np.testing.assert_allclose(m.potential[i, a], pot(R[i], a), rtol=1e-13)
            h = 1e-4
            e = np.eye(3)
            fd_field = [-(pot(R[i] + h * e[k], a) - pot(R[i] - h * e[k], a)) / (2 * h) for k in range(3)]
            np.testing.assert_allclose(m.field[i, a], fd_field, rtol=1e-7, atol=1e-9)
            hess = np.array([[(pot(R[i] + h * (e[p] + e[q]), a) - pot(R[i] + h * (e[p] - e[q]), a)
                               - pot(R[i] - h * (e[p] - e[q]), a) + pot(R[i] - h * (e[p] + e[q]), a)) / (4 * h * h)
                              for q in range(3)] for p in range(3)])
            np.testing.assert_allclose(m.field_gradient[i, a], -hess, rtol=1e-5, atol=1e-6)
            rho_trace[i, a] = sum(np.exp(-np.sum((R[i] - R[j]) ** 2) / (2 * sigma**2))
                                  for j in range(len(R)) if [1, 8].index(sp[j]) == a) / (2 * math.pi * sigma**2) ** 1.5
    np.testing.assert_allclose(np.trace(np.asarray(m.field_gradient), axis1=-2, axis2=-1), 4 * math.pi * rho_trace,
                               rtol=1e-11, atol=1e-12)
    ex = lode_multipoles(R, sp, sigma=sigma, exclude_center=True)
    own = np.where(np.arange(2)[None, :] == np.array([[1, 8].index(z) for z in sp])[:, None], 1.0, 0.0)
    np.testing.assert_allclose(m.potential - ex.potential, own * math.sqrt(2 / math.pi) / sigma, rtol=1e-13)


def test_multipoles_periodic(ksum_reference):
    """PME multipoles = k-sum multipoles; trace of the field gradient = 4π(ρ_a − N_a/V)."""
    R, sp, cell, _ = ksum_reference
    ref = lode_multipoles(R, sp, cell=cell, sigma=SIGMA, method="ksum", accuracy=1e-12)
    for accuracy in (1e-6,):
        pme = lode_multipoles(R, sp, cell=cell, sigma=SIGMA, accuracy=accuracy)
        assert pme.params.method == "pme"
        for a, b in ((pme.potential, ref.potential), (pme.field, ref.field),
                     (pme.field_gradient, ref.field_gradient)):
            assert rel_rms(a, b) < accuracy
    # trace: the Laplacian of the periodic potential with its background
    images = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T @ cell
    vol = abs(np.linalg.det(cell))
    for i in range(len(R)):
        for a, z in enumerate([1, 8]):
            rho = sum(np.exp(-np.sum((R[i] - R[j] - images) ** 2, axis=1) / 2).sum()
                      for j in range(len(R)) if sp[j] == z) / (2 * math.pi) ** 1.5
            expect = 4 * math.pi * (rho - np.sum(sp == z) / vol)
            np.testing.assert_allclose(np.trace(np.asarray(ref.field_gradient[i, a])), expect, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------
# front door: dtype, recompilation, bad input
# --------------------------------------------------------------------------------------
def test_float32_and_no_recompilation():
    Rc, spc = cluster(1)
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    ref = lode(Rc, spc, **kw).values
    out = lode(jnp.asarray(Rc, jnp.float32), spc, **kw).values
    assert out.dtype == jnp.float32
    # float32 round-off on O(1) features, accumulated over ~100 quadrature nodes per pair
    assert rel_rms(out, ref) < 1e-5
    lode_module = importlib.import_module("jaxlr._api.lode")
    lode(Rc + 0.01, spc, **kw)
    before = lode_module._evaluate._cache_size()
    lode(Rc + 0.02, spc, **kw)
    assert lode_module._evaluate._cache_size() == before


def test_bad_input():
    R, sp, cell = periodic_system()
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA)
    bad = [
        dict(positions=R[:, :2]),
        dict(positions=np.where(np.arange(len(R))[:, None] == 0, np.nan, R)),
        dict(species=sp[:-1]),
        dict(sigma=0.0),
        dict(sigma=-1.0),
        dict(cutoff=0.0),
        dict(max_radial=0),
        dict(max_angular=-1),
        dict(method="ewald"),
        dict(method="direct"),
        dict(accuracy=1.0),
        dict(accuracy=0.0),
        dict(cell=np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]])),
        dict(cell=np.eye(2)),
        dict(species_list=[1]),
        dict(order=5),
        dict(radial_widths=np.ones(NMAX + 1)),
        dict(radial_widths=-np.ones(NMAX)),
    ]
    for change in bad:
        args = dict(positions=R, species=sp, cell=cell, **kw)
        args.update(change)
        with pytest.raises(ValueError):
            lode(args.pop("positions"), args.pop("species"), **args)
    Rc, spc = cluster(1)
    for method in ("ksum", "pme"):
        with pytest.raises(ValueError, match="periodic cell"):
            lode(Rc, spc, method=method, **kw)
    with pytest.raises(ValueError):
        lode(R, sp, cell=cell, order=4, **kw)          # order < L + 2 for L = 3 derivatives? (4 < 5)
    # inputs are not mutated
    R0, sp0 = Rc.copy(), spc.copy()
    lode(Rc, spc, **kw)
    np.testing.assert_array_equal(Rc, R0)
    np.testing.assert_array_equal(spc, sp0)


def test_tune_lode_bad_input_cache_and_hash(ksum_reference):
    """tune_lode validates its inputs itself (it is public); results are cached; the
    informative estimated_error takes no part in equality, so params that differ only in
    it share one compiled function."""
    kw = dict(cutoff=RC, max_radial=NMAX, max_angular=LMAX, n_species=2)
    cell = np.eye(3) * 8.0
    bad = [dict(sigma=0.0), dict(sigma=-1.0), dict(sigma=np.nan), dict(accuracy=0.0), dict(accuracy=2.0),
           dict(cutoff=-1.0), dict(max_radial=0), dict(max_angular=-1), dict(n_species=0), dict(method="ewald"),
           dict(order=5), dict(order=14), dict(n_atoms=0), dict(radial_widths=-np.ones(NMAX)),
           dict(cell=np.zeros((3, 3))), dict(cell=np.eye(2)), dict(method="ksum", cell=None)]
    for change in bad:
        args = dict(cell=cell, sigma=SIGMA, **kw)
        args.update(change)
        with pytest.raises(ValueError):
            tune_lode(args.pop("cell"), args.pop("sigma"), **args)
    for args in ((0.0, 1e-3), (1.0, 1.5)):
        with pytest.raises(ValueError):
            ksum_cutoff(*args)
    p1 = tune_lode(cell, SIGMA, accuracy=1e-4, **kw)
    assert tune_lode(cell, SIGMA, accuracy=1e-4, **kw) is p1              # cached
    other = dataclasses.replace(p1, estimated_error=0.5)
    assert other == p1 and hash(other) == hash(p1)
    R, sp, cell, _ = ksum_reference
    lode_module = importlib.import_module("jaxlr._api.lode")
    first = lode(R, sp, cell=cell, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA, accuracy=1e-6)
    before = lode_module._evaluate._cache_size()
    lode(R + 0.01, sp, cell=cell, cutoff=RC, max_radial=NMAX, max_angular=LMAX, sigma=SIGMA,
         params=dataclasses.replace(first.params, estimated_error=1.0))
    assert lode_module._evaluate._cache_size() == before


def test_tuner_error_model_is_monotone():
    errs = [multipole_pme_error(8, x) for x in (0.2, 0.4, 0.6, 0.8)]
    assert all(a < b for a, b in zip(errs, errs[1:]))
    p4 = tune_lode(np.eye(3) * 20, 1.0, cutoff=4.0, max_radial=4, max_angular=3, n_species=2, accuracy=1e-4)
    p8 = tune_lode(np.eye(3) * 20, 1.0, cutoff=4.0, max_radial=4, max_angular=3, n_species=2, accuracy=1e-8)
    assert p4.estimated_error <= 1e-4 and p8.estimated_error <= 1e-8
    assert np.prod(p8.mesh.shape) * p8.mesh.order**3 > np.prod(p4.mesh.shape) * p4.mesh.order**3


# --------------------------------------------------------------------------------------
# featomic (optional)
# --------------------------------------------------------------------------------------
def test_featomic_lode_agreement(ksum_reference):
    """Agreement with featomic's LodeSphericalExpansion (skipped when featomic is absent).

    Conventions mapped (everything else — k = 0 dropped, i^l sign, real harmonics,
    prefactors, the centre's own density included — is identical):

    * featomic's density ``SmearedPowerLaw(smearing=σ, exponent=1)`` is the potential of our
      unit Gaussian, erf(r/√2σ)/r;
    * featomic's ``Gto(max_radial=N−1, radius=r0)`` has N functions of widths
      r0·max(√n, 1)/N (= ``gto_widths(r0, N)``), orthonormalised *and projected* on
      [0, 5·r0] — its "radius" only sets the widths, there is no sharp sphere — so the
      matching jaxlr call is ``cutoff=5·r0, radial_widths=gto_widths(r0, N)``.
    """
    featomic = pytest.importorskip("featomic")
    ase = pytest.importorskip("ase")
    R, sp, cell, _ = ksum_reference
    r0, n, L = RC, NMAX, LMAX
    atoms = ase.Atoms(numbers=sp, positions=R, cell=cell, pbc=True)
    calc = featomic.LodeSphericalExpansion(
        density=featomic.density.SmearedPowerLaw(smearing=SIGMA, exponent=1),
        basis=featomic.basis.TensorProduct(max_angular=L, radial=featomic.basis.Gto(max_radial=n - 1, radius=r0),
                                           spline_accuracy=1e-10),
        k_cutoff=ksum_cutoff(SIGMA, 1e-10))
    desc = calc.compute(atoms)
    theirs = np.zeros((len(R), 2, n, (L + 1) ** 2))
    for key, block in desc.items():
        l = int(key["o3_lambda"])
        a = [1, 8].index(int(key["neighbor_type"]))
        ns = np.asarray(block.properties.column("n"))
        for s, c in enumerate(np.asarray(block.samples.column("atom"))):
            theirs[c, a][ns, l * l:(l + 1) ** 2] = np.asarray(block.values[s]).T    # (o3_mu, n) → (n, m)
    ours = lode(R, sp, cell=cell, cutoff=5 * r0, max_radial=n, max_angular=L, sigma=SIGMA, method="ksum",
                accuracy=1e-10, radial_widths=gto_widths(r0, n)).values
    assert rel_rms(ours, theirs) < 1e-8        # measured 7e-11 (featomic 0.6.7, splines at 1e-10)
