"""Tests of the local features: harmonics, radial basis, spherical expansion, power spectrum.

References are independent of the library code: scipy's complex spherical harmonics
(real combination written out here), an analytic (incomplete-gamma) GTO overlap,
scipy's modified spherical Bessel functions, and a brute-force 3D quadrature of
∫ R_n Y_lm g_σ(x − r_j) d³x in a frame aligned with r_j.  Invariances (rotation with the
Wigner matrices, translation, permutation, padding, periodic images) and finite
differences complete the picture.  float64 throughout unless a test says otherwise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation, separated_points
from scipy import special

import jaxlr
from jaxlr.features import (
    cutoff_function,
    flatten_invariants,
    gto_widths,
    power_spectrum,
    radial_basis,
    radial_quadrature,
    real_spherical_harmonics,
    scaled_modified_spherical_bessel,
    solid_harmonics,
    spherical_expansion,
    spherical_expansion_terms,
    wigner_d_real,
)
from jaxlr.features._spherical import _jitted_terms

# One small static configuration and one system shape (N_ATOMS atoms, CAP neighbour
# slots) shared by most tests: compilation dominates the runtime on a small CPU, and every
# call below with the same shapes reuses one compiled function.  Systems with fewer atoms
# are padded with atoms of species −1 far away (which also exercises padding).
CUT, NMAX, LMAX, SIG, WIDTH = 4.0, 5, 4, 0.4, 0.5
N_ATOMS, CAP = 8, 48
KW = dict(cutoff=CUT, max_radial=NMAX, max_angular=LMAX, n_species=2)
WIDTHS = gto_widths(CUT, NMAX)


def _terms(positions, species_index, nbrs, *, cell=None, sigma=SIG, widths=WIDTHS, center_atom_weight=0.0):
    """The front door's jitted core with the shared static configuration.

    Centre left out unless asked (the library default is 1): most tests check the
    neighbour sums alone against their references."""
    return _jitted_terms(jnp.asarray(positions), jnp.asarray(species_index, jnp.int32), nbrs,
                         cell=None if cell is None else jnp.asarray(cell), sigma=sigma, widths=widths,
                         cutoff_width=WIDTH, center_atom_weight=center_atom_weight, **KW)


def _nl(positions, cell=None, cutoff=CUT + 0.5, atom_mask=None):
    """Host list with the shared capacity (cutoff with a skin: the core must ignore r > r_c)."""
    return jaxlr.neighbor_list(np.asarray(positions), cutoff, cell, capacity=CAP, atom_mask=atom_mask)


def _pad(positions, species):
    """Pad an open-boundary system to N_ATOMS with species −1 atoms far away."""
    n = len(positions)
    far = np.array([[1000.0 + 20.0 * k, 0.0, 0.0] for k in range(N_ATOMS - n)]).reshape(-1, 3)
    return np.concatenate([positions, far]), np.concatenate([species, -np.ones(N_ATOMS - n, np.int32)])


@jax.jit
def _jacobian(positions, species_index, nbrs):
    """d values / d positions, (N, S, n, (L+1)², N, 3) — one compilation for all tests."""
    return jax.jacfwd(lambda p: _terms(p, species_index, nbrs))(positions)


def _cluster(seed, n, box=4.0, min_dist=0.9):
    rng = np.random.default_rng(seed)
    positions = separated_points(rng, n, box, min_dist)
    return positions, rng.integers(0, 2, n).astype(np.int32)


# --------------------------------------------------------------------------------------
# independent references (numpy / scipy)
# --------------------------------------------------------------------------------------
def ref_real_ylm(vectors, L):
    """Real Y_lm from scipy's complex ones: √2 (−1)^m Re/Im Y_l^|m| (removes the CS phase)."""
    v = np.asarray(vectors, dtype=np.float64)
    r = np.linalg.norm(v, axis=-1)
    theta = np.arccos(np.clip(v[..., 2] / r, -1.0, 1.0))
    phi = np.arctan2(v[..., 1], v[..., 0])
    out = []
    for l in range(L + 1):
        for m in range(-l, l + 1):
            y = special.sph_harm_y(l, abs(m), theta, phi)
            if m > 0:
                out.append(math.sqrt(2.0) * (-1) ** m * y.real)
            elif m < 0:
                out.append(math.sqrt(2.0) * (-1) ** m * y.imag)
            else:
                out.append(y.real)
    return np.stack(out, axis=-1)


def ref_radial_basis(r, widths, cutoff):
    """Löwdin-orthonormal GTOs with the overlap in closed form (regularised incomplete gamma)."""
    widths = np.asarray(widths, dtype=np.float64)
    n = len(widths)
    a = 1.0 / (2.0 * widths ** 2)
    k = np.arange(n)[:, None] + np.arange(n)[None, :] + 2
    s = a[:, None] + a[None, :]
    h = 0.5 * (k + 1)
    overlap = 0.5 * s ** -h * special.gamma(h) * special.gammainc(h, s * cutoff ** 2)
    norm = 1.0 / np.sqrt(np.diag(overlap))
    lam, vec = np.linalg.eigh(overlap * norm[:, None] * norm[None, :])
    coeff = (vec * lam ** -0.5) @ vec.T
    r = np.asarray(r, dtype=np.float64)
    g = r[..., None] ** np.arange(n) * np.exp(-a * r[..., None] ** 2) * norm
    return g @ coeff.T


def ref_single_neighbour(rj, sigma, widths, cutoff, L, n_r=80, n_t=120):
    """∫ R_n(|x|) Y_lm(x̂) g_σ(x − r_j) d³x by brute-force quadrature: (n_max, (L+1)²).

    Spherical coordinates about the axis r̂_j, where the Gaussian depends on (r, θ')
    only: Gauss–Legendre in r on [d − 9σ, d + 9σ] ∩ [0, ∞) and in θ' on [0, π]
    (weight sin θ'), and a uniform φ' grid exact for trigonometric degree ≤ L.
    """
    rj = np.asarray(rj, dtype=np.float64)
    d = np.linalg.norm(rj)
    ez = rj / d if d > 0 else np.array([0.0, 0.0, 1.0])
    e1 = np.cross(ez, [0.3, 0.5, 0.8])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(ez, e1)
    lo, hi = max(0.0, d - 9 * sigma), d + 9 * sigma
    t, wt = np.polynomial.legendre.leggauss(n_r)
    r = lo + (hi - lo) * 0.5 * (t + 1)
    wr = (hi - lo) * 0.5 * wt * r * r
    t, wt = np.polynomial.legendre.leggauss(n_t)
    th = 0.5 * np.pi * (t + 1)
    wth = 0.5 * np.pi * wt * np.sin(th)
    n_p = 2 * L + 4
    ph = 2 * np.pi * np.arange(n_p) / n_p
    R_, T_, P_ = np.meshgrid(r, th, ph, indexing="ij")
    W = (wr[:, None, None] * wth[None, :, None] * (2 * np.pi / n_p)) * np.ones_like(P_)
    u = (np.sin(T_) * np.cos(P_))[..., None] * e1 + (np.sin(T_) * np.sin(P_))[..., None] * e2 \
        + np.cos(T_)[..., None] * ez
    g = (2 * np.pi * sigma ** 2) ** -1.5 * np.exp(-(R_ ** 2 + d * d - 2 * R_ * d * np.cos(T_)) / (2 * sigma ** 2))
    rad = ref_radial_basis(R_.ravel(), widths, cutoff)
    y = ref_real_ylm(u.reshape(-1, 3), L)
    return np.einsum("p,pn,pk->nk", (W * g).ravel(), rad, y)


def sphere_quadrature(n_theta=30, n_phi=60):
    t, wt = np.polynomial.legendre.leggauss(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    T, P = np.meshgrid(t, phi, indexing="ij")
    st = np.sqrt(1 - T ** 2)
    v = np.stack([st * np.cos(P), st * np.sin(P), T], axis=-1).reshape(-1, 3)
    w = (wt[:, None] * np.full(n_phi, 2 * np.pi / n_phi)).ravel()
    return v, w


# --------------------------------------------------------------------------------------
# spherical harmonics
# --------------------------------------------------------------------------------------
_ylm = jax.jit(real_spherical_harmonics, static_argnums=1)
_solid = jax.jit(solid_harmonics, static_argnums=1)
_both = jax.jit(lambda v, L: (real_spherical_harmonics(v, L), solid_harmonics(v, L)), static_argnums=1)


def test_harmonics_orthonormal_and_against_scipy():
    L = 8
    v, w = sphere_quadrature()
    x = np.random.default_rng(0).normal(size=(50, 3)) * 3.0
    x[0] = [0.0, 0.0, -1.5]      # poles
    x[1] = [0.0, 0.0, 2.0]
    pts = jnp.asarray(np.concatenate([v * 2.7, x]))
    y, solid = (np.asarray(a) for a in _both(pts, L))
    np.testing.assert_allclose((y[:len(v)] * w[:, None]).T @ y[:len(v)], np.eye((L + 1) ** 2), atol=1e-12)
    ours = y[len(v):]
    np.testing.assert_allclose(ours, ref_real_ylm(x, L), atol=2e-13, rtol=1e-11)
    # l = 1 is √(3/4π) (y, z, x)/r
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(ours[:, 1:4], math.sqrt(3 / (4 * math.pi)) * u[:, [1, 2, 0]], atol=1e-14)
    r = np.linalg.norm(x, axis=1)
    l_of = np.repeat(np.arange(L + 1), 2 * np.arange(L + 1) + 1)
    np.testing.assert_allclose(solid[len(v):], ours * r[:, None] ** l_of, rtol=1e-11, atol=1e-12)


def test_harmonics_zero_vector_dtype_and_gradients():
    L = 3
    x = np.array([0.3, -1.2, 0.7])
    pts = jnp.asarray(np.stack([np.zeros(3), x, 5 * x, 1e-200 * x]))
    y = np.asarray(_ylm(pts, L))
    np.testing.assert_allclose(y[0], np.eye(16)[0] / math.sqrt(4 * math.pi), atol=0)
    # direction only (also for tiny vectors: scaled internally, no underflow)
    np.testing.assert_allclose(y[2], y[1], atol=1e-14)
    np.testing.assert_allclose(y[3], y[1], atol=1e-14)

    @jax.jit
    def jacobians(p):
        jy = jax.vmap(jax.jacfwd(lambda v: real_spherical_harmonics(v, L)))(p)
        js = jax.vmap(jax.jacrev(lambda v: solid_harmonics(v, L)))(p)
        return jy, js

    jy, js = jacobians(pts)
    assert np.all(np.isfinite(jy)) and np.all(np.isfinite(js))
    np.testing.assert_allclose(jy[0], 0.0, atol=0)                   # the zero vector: zero gradient
    np.testing.assert_allclose(np.asarray(jy[1]) @ x, 0.0, atol=1e-13)   # scale invariance
    # solid harmonics at 0: only l = 1 has a gradient, √(3/4π) in the (y, z, x) order
    expected = np.zeros((16, 3))
    expected[1:4] = math.sqrt(3 / (4 * math.pi)) * np.eye(3)[[1, 2, 0]]
    np.testing.assert_allclose(js[0], expected, atol=1e-15)
    # dtype follows the input
    y32 = _ylm(jnp.asarray(pts, jnp.float32)[:3], L)
    assert y32.dtype == jnp.float32 and _solid(jnp.ones(3, jnp.float32), L).dtype == jnp.float32
    np.testing.assert_allclose(y32, y[:3], atol=2e-6)


def test_wigner_matrices():
    L = 6
    rot = random_rotation(3)
    d = wigner_d_real(rot, L)
    np.testing.assert_allclose(d @ d.T, np.eye((L + 1) ** 2), atol=1e-12)
    x = np.random.default_rng(1).normal(size=(20, 3))
    # Y(R x) = D(R) Y(x); rows: x @ R.T
    np.testing.assert_allclose(ref_real_ylm(x @ rot.T, L), ref_real_ylm(x, L) @ d.T, atol=1e-12)
    # the l = 1 block is R itself in the (y, z, x) order
    perm = [1, 2, 0]
    np.testing.assert_allclose(d[1:4, 1:4], rot[np.ix_(perm, perm)], atol=1e-12)


# --------------------------------------------------------------------------------------
# radial basis and special functions
# --------------------------------------------------------------------------------------
def test_gto_widths_and_quadrature():
    np.testing.assert_allclose(gto_widths(6.0, 4), 6.0 * np.array([1, 1, math.sqrt(2), math.sqrt(3)]) / 4)
    r, w = radial_quadrature(3.0, 20)
    np.testing.assert_allclose(np.sum(w * r ** 3), 3.0 ** 6 / 6, rtol=1e-13)
    np.testing.assert_allclose(np.sum(w * np.exp(-r)), 2 - np.exp(-3.0) * (9 + 6 + 2), rtol=1e-13)
    with pytest.raises(ValueError):
        gto_widths(-1.0, 3)
    with pytest.raises(ValueError):
        gto_widths(4.0, 0)


_radial = jax.jit(radial_basis, static_argnums=2)


@pytest.mark.parametrize("cutoff, n_max", [(4.0, 5), (5.0, 8)])
def test_radial_basis_orthonormal_and_reference(cutoff, n_max):
    widths = gto_widths(cutoff, n_max)
    r, w = radial_quadrature(cutoff, 300)          # not the basis' own 256-node rule
    x = np.linspace(0.0, cutoff + 2.0, 57)
    rad = np.asarray(_radial(jnp.asarray(np.concatenate([r, x])), jnp.asarray(widths), cutoff))
    np.testing.assert_allclose((rad[:300] * w[:, None]).T @ rad[:300], np.eye(n_max), atol=1e-10)
    ref = ref_radial_basis(x, widths, cutoff)
    np.testing.assert_allclose(rad[300:], ref, atol=1e-9 * np.abs(ref).max())


def test_radial_basis_width_gradient_and_dtype():
    cutoff, n_max = 4.0, 5
    x = jnp.linspace(0.0, 4.5, 13)
    proj = np.random.default_rng(2).normal(size=(13, n_max))

    @jax.jit
    def f(widths):
        return jnp.sum(radial_basis(x, widths, cutoff) * proj)

    widths = jnp.asarray(gto_widths(cutoff, n_max))
    g = jax.jit(jax.grad(f))(widths)
    h = 1e-6
    fd = np.array([(f(widths.at[k].add(h)) - f(widths.at[k].add(-h))) / (2 * h) for k in range(n_max)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())
    r32 = _radial(x.astype(jnp.float32), widths.astype(jnp.float32), cutoff)
    assert r32.dtype == jnp.float32
    # float32 budget: 1e-4 of the largest value (the Löwdin S^(-1/2) of the overlap
    # matrix amplifies rounding; 5.8e-5 relative was seen on an AVX-512 CPU)
    r64 = _radial(x, widths, cutoff)
    np.testing.assert_allclose(r32, r64, atol=1e-4 * float(jnp.abs(r64).max()))


def test_scaled_bessel():
    L = 12
    z = np.concatenate([[0.0, 1e-9, 1e-3, 0.5], np.linspace(1.0, 120.0, 400)])
    ref = np.stack([special.spherical_in(l, z) * np.exp(-z) for l in range(L + 1)], axis=-1)
    bessel = jax.jit(scaled_modified_spherical_bessel, static_argnums=1)
    ours = np.asarray(bessel(jnp.asarray(z), L))
    big = ref > 1e-250
    np.testing.assert_allclose(ours[big], ref[big], rtol=1e-12)
    assert np.all(np.abs(ours[~big]) < 1e-250)
    # float32: relative error (values above the float32 underflow)
    o32 = np.asarray(bessel(jnp.asarray(z, jnp.float32), L), dtype=np.float64)
    ok = ref > 1e-30
    assert np.max(np.abs(o32[ok] - ref[ok]) / ref[ok]) < 1e-4
    # derivatives (custom JVP): finite at 0, equal to scipy's elsewhere, and a second
    # derivative against finite differences of the first
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda t: scaled_modified_spherical_bessel(t, L))))(jnp.asarray(z))
    assert np.all(np.isfinite(jac))
    dref = np.stack([(special.spherical_in(l, z, derivative=True) - special.spherical_in(l, z)) * np.exp(-z)
                     for l in range(L + 1)], axis=-1)
    np.testing.assert_allclose(np.asarray(jac)[1:], dref[1:], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.asarray(jac)[0], np.eye(L + 1)[1] / 3 - np.eye(L + 1)[0], atol=1e-15)
    d2 = jax.jit(jax.grad(jax.grad(lambda t: scaled_modified_spherical_bessel(t, 3)[3])))(2.0)

    def first(t):
        return (special.spherical_in(3, t, derivative=True) - special.spherical_in(3, t)) * np.exp(-t)

    h = 1e-4
    np.testing.assert_allclose(float(d2), (first(2.0 + h) - first(2.0 - h)) / (2 * h), rtol=1e-6)


def test_cutoff_function():
    r = np.array([0.0, 3.4, 3.5, 3.75, 3.9, 4.0, 4.3])
    f = np.asarray(cutoff_function(jnp.asarray(r), CUT, WIDTH))
    t = np.clip((r - CUT + WIDTH) / WIDTH, 0, 1)
    np.testing.assert_allclose(f, 0.5 * (1 + np.cos(np.pi * t)), atol=1e-15)
    df = jax.vmap(jax.grad(lambda x: cutoff_function(x, CUT, WIDTH)))(jnp.asarray([3.5, 4.0, 4.0 - 1e-9]))
    np.testing.assert_allclose(df[:2], 0.0, atol=1e-14)
    assert abs(float(df[2])) < 1e-7              # f' ≈ −(π/w)² ε/2 just inside r_c


# --------------------------------------------------------------------------------------
# spherical expansion: independent reference
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rj", [[1.3, -1.6, 0.9], [0.25, 0.1, -0.2]], ids=["far", "near"])
def test_single_neighbour_against_bruteforce(rj):
    """Centre at the origin, one neighbour of the other species inside r_c − w (f_c = 1)."""
    pos, spec = _pad(np.array([[0.0, 0.0, 0.0], rj]), np.array([0, 1], np.int32))
    c = np.asarray(_terms(pos, spec, _nl(pos)))
    ref = ref_single_neighbour(rj, SIG, WIDTHS, CUT, LMAX)
    np.testing.assert_allclose(c[0, 1], ref, rtol=1e-8, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(c[0, 0], 0.0, atol=0)      # no atom of species 0 around
    # the neighbour sees the centre along −r_j: Y_lm(−x) = (−1)^l Y_lm(x)
    parity = (-1.0) ** np.repeat(np.arange(LMAX + 1), 2 * np.arange(LMAX + 1) + 1)
    np.testing.assert_allclose(c[1, 0], ref * parity, rtol=1e-8, atol=1e-9 * np.abs(ref).max())
    assert np.all(c[2:] == 0)                            # padding atoms get zero features


def test_center_atom_weight_against_bruteforce():
    pos, spec = _pad(np.array([[0.3, 0.2, 0.1]]), np.array([0], np.int32))
    c = np.asarray(_terms(pos, spec, _nl(pos), center_atom_weight=0.7))
    ref = ref_single_neighbour([0.0, 0.0, 0.0], SIG, WIDTHS, CUT, LMAX)
    np.testing.assert_allclose(c[0, 0], 0.7 * ref, rtol=1e-8, atol=1e-9 * np.abs(ref).max())
    assert np.all(c[0, 1] == 0) and np.all(c[1:] == 0)
    assert np.allclose(ref[:, 1:], 0, atol=1e-12 * np.abs(ref).max())


def test_spline_table_equals_quadrature():
    """The default interpolation table against the per-pair quadrature (n_spline=None),
    values and position derivatives, pairs spread over [0, r_c]."""
    pos, spec = _cluster(16, N_ATOMS, box=4.5, min_dist=0.3)
    nl = _nl(pos)
    exact = _jitted_terms(jnp.asarray(pos), jnp.asarray(spec), nl, sigma=SIG, widths=WIDTHS, cutoff_width=WIDTH,
                          n_spline=None, **KW)                   # default: centre included
    table = _terms(pos, spec, nl, center_atom_weight=1.0)
    np.testing.assert_allclose(np.asarray(table), np.asarray(exact), atol=1e-10 * np.abs(exact).max())


@pytest.mark.slow
def test_large_basis_against_bruteforce():
    """The accuracy claimed in the module docstring: L = 8, n_max = 8, σ = 0.25 Å, r_c = 5 Å."""
    cutoff, n_max, L, sigma = 5.0, 8, 8, 0.25
    rj = [2.1, 1.7, -2.5]
    pos = np.array([[0.0, 0.0, 0.0], rj])
    c = spherical_expansion_terms(pos, np.array([0, 1]), jaxlr.neighbor_list(pos, cutoff), n_species=2,
                                  cutoff=cutoff, max_radial=n_max, max_angular=L, sigma=sigma)
    ref = ref_single_neighbour(rj, sigma, gto_widths(cutoff, n_max), cutoff, L, n_r=160, n_t=400)
    np.testing.assert_allclose(np.asarray(c[0, 1]), ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())


# --------------------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------------------
def test_rotation_translation_permutation():
    pos, spec = _cluster(4, N_ATOMS)
    c = np.asarray(_terms(pos, spec, _nl(pos)))
    assert np.abs(c).max() > 1e-2
    rot = random_rotation(11)
    pos_r = pos @ rot.T + np.array([3.1, -7.2, 0.4])
    c_r = np.asarray(_terms(pos_r, spec, _nl(pos_r)))
    d = wigner_d_real(rot, LMAX)
    np.testing.assert_allclose(c_r, c @ d.T, atol=1e-12)
    p = np.asarray(power_spectrum(c))
    np.testing.assert_allclose(np.asarray(power_spectrum(c_r)), p, atol=1e-12)
    # inversion: l-odd blocks flip sign, power spectrum unchanged
    c_i = np.asarray(_terms(-pos, spec, _nl(-pos)))
    parity = (-1.0) ** np.repeat(np.arange(LMAX + 1), 2 * np.arange(LMAX + 1) + 1)
    np.testing.assert_allclose(c_i, c * parity, atol=1e-12)
    # permuting atoms permutes rows; same-species neighbours are summed symmetrically
    perm = np.random.default_rng(5).permutation(N_ATOMS)
    c_p = np.asarray(_terms(pos[perm], spec[perm], _nl(pos[perm])))
    np.testing.assert_allclose(c_p, c[perm], atol=1e-12)
    # swapping the species labels swaps the channels
    c_s = np.asarray(_terms(pos, 1 - spec, _nl(pos)))
    np.testing.assert_allclose(c_s, c[:, ::-1], atol=1e-12)


def test_power_spectrum_definition():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(3, 2, 4, 9))
    b = rng.normal(size=(3, 1, 5, 9))
    p = np.asarray(power_spectrum(a, b))
    assert p.shape == (3, 2, 4, 1, 5, 3)
    for l in range(3):
        sl = slice(l * l, (l + 1) ** 2)
        ref = np.einsum("ianm,ibkm->ianbk", a[..., sl], b[..., sl]) / math.sqrt(2 * l + 1)
        np.testing.assert_allclose(p[..., l], ref, atol=1e-14)
    np.testing.assert_allclose(np.asarray(power_spectrum(a)), np.asarray(power_spectrum(a, a)))
    assert flatten_invariants(p).shape == (3, 2 * 4 * 5 * 3)
    with pytest.raises(ValueError):
        power_spectrum(a, rng.normal(size=(3, 1, 5, 16)))
    with pytest.raises(ValueError):
        power_spectrum(rng.normal(size=(3, 2, 4, 8)))


# --------------------------------------------------------------------------------------
# cutoff smoothness, padding, periodic images, neighbour lists
# --------------------------------------------------------------------------------------
def test_smooth_at_cutoff():
    """Values and position gradients are continuous where the switch starts and at r_c."""
    u = np.array([0.48, -0.6, 0.64])
    u /= np.linalg.norm(u)

    def feats(dist):
        pos, spec = _pad(np.array([[0.0, 0.0, 0.0], dist * u]), np.array([0, 1], np.int32))
        nl = _nl(pos, cutoff=CUT + 1.0)                   # the list reaches beyond r_c
        v = np.asarray(_terms(pos, spec, nl))[0]
        g = np.asarray(_jacobian(jnp.asarray(pos), jnp.asarray(spec), nl))[0, ..., 1, :]
        return v, g

    eps = 1e-7
    v_mid, g_mid = feats(CUT - WIDTH / 2)
    for r0 in (CUT, CUT - WIDTH):
        (v1, g1), (v2, g2) = feats(r0 - eps), feats(r0 + eps)
        assert np.abs(v1 - v2).max() < 1e-5 * np.abs(v_mid).max()
        assert np.abs(g1 - g2).max() < 1e-5 * np.abs(g_mid).max()
    v_in, g_in = feats(CUT - eps)
    v_out, g_out = feats(CUT + eps)
    assert np.all(v_out == 0) and np.all(g_out == 0)
    assert np.abs(v_in).max() < 1e-10 * np.abs(v_mid).max()
    assert np.abs(g_in).max() < 1e-5 * np.abs(g_mid).max()


def test_padding_atoms_contribute_nothing():
    """Padding atoms (species −1) placed among the real ones, and present in the list."""
    pos, spec = _cluster(7, 5)
    far_pos, far_spec = _pad(pos, spec)
    c = np.asarray(_terms(far_pos, far_spec, _nl(far_pos), center_atom_weight=1.0))
    rng = np.random.default_rng(8)
    near = np.concatenate([pos, pos[:2] + rng.normal(scale=0.8, size=(2, 3)), rng.uniform(0, 4, (1, 3))])
    nl = _nl(near)
    assert np.asarray(nl.mask)[:5, :].sum() > np.asarray(_nl(far_pos).mask)[:5].sum()
    c_pad = np.asarray(_terms(near, far_spec, nl, center_atom_weight=1.0))
    np.testing.assert_allclose(c_pad, c, atol=1e-13)
    assert np.all(c_pad[5:] == 0)
    jac = np.asarray(_jacobian(jnp.asarray(near), jnp.asarray(far_spec), nl))
    assert np.all(np.isfinite(jac))
    assert np.all(jac[..., 5:, :] == 0) and np.all(jac[5:] == 0)
    c0 = np.asarray(_terms(far_pos, far_spec, _nl(far_pos)))
    assert not np.allclose(c0, c)                        # the centre term is visible in l = 0
    np.testing.assert_allclose(c0[..., 1:], c[..., 1:], atol=1e-14)


def _periodic_system(seed):
    """Triclinic cell (widths > 2 (r_c + skin), as jax-md needs) with N_ATOMS atoms."""
    rng = np.random.default_rng(seed)
    cell = np.array([[9.2, 0.0, 0.0], [1.1, 9.0, 0.0], [-0.6, 0.8, 9.4]])
    frac = rng.uniform(0, 1, (N_ATOMS, 3))
    frac[:4] = frac[0] + rng.uniform(-0.25, 0.25, (4, 3))    # a denser group: more pairs
    return (frac % 1.0) @ cell, cell, rng.integers(0, 2, N_ATOMS).astype(np.int32)


def test_periodic_equals_explicit_images():
    """A small triclinic cell (cutoff > cell widths: many images of each atom) equals an
    open-boundary cluster of the explicit images."""
    rng = np.random.default_rng(9)
    cell = np.array([[3.2, 0.0, 0.0], [0.7, 3.0, 0.0], [-0.4, 0.5, 3.4]])
    pos = np.concatenate([rng.uniform(0, 1, (3, 3)) @ cell, rng.uniform(0, 1, (N_ATOMS - 3, 3)) @ cell])
    spec = np.array([0, 1, 1] + [-1] * (N_ATOMS - 3), dtype=np.int32)
    nl = _nl(pos, cell, cutoff=CUT, atom_mask=spec >= 0)
    c = np.asarray(_terms(pos, spec, nl, cell=cell))
    shifts = np.array([[a, b, s] for a in range(-3, 4) for b in range(-3, 4) for s in range(-3, 4)])
    images = (pos[None, :3, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
    spec_img = np.tile(spec[:3], len(shifts))
    keep = np.flatnonzero(np.linalg.norm(images - pos[:3].mean(0), axis=1) < CUT + 3.0)
    first = [int(np.flatnonzero(np.abs(shifts).sum(1) == 0)[0]) * 3 + k for k in range(3)]
    order = np.concatenate([first, np.setdiff1d(keep, first)])
    cl = images[order]
    ref = np.asarray(spherical_expansion(cl, spec_img[order] + 1, cutoff=CUT, max_radial=NMAX, max_angular=LMAX,
                                         sigma=SIG, cutoff_width=WIDTH, center_atom_weight=0.0).values)[:3]
    np.testing.assert_allclose(c[:3], ref, atol=1e-12 * np.abs(ref).max())
    assert np.all(c[3:] == 0)


def test_jax_md_list_matches_host_list():
    from jax_md import partition, space
    pos, cell, spec = _periodic_system(10)
    displacement, _ = space.periodic_general(jnp.asarray(cell.T), fractional_coordinates=False)
    neighbor_fn = partition.neighbor_list(displacement, jnp.asarray(cell.T), CUT + 0.3, dr_threshold=0.0,
                                          format=partition.Dense, fractional_coordinates=False,
                                          disable_cell_list=True)
    md = neighbor_fn.allocate(jnp.asarray(pos))
    assert not bool(md.did_buffer_overflow)
    host = _nl(pos, cell)
    b = np.asarray(_terms(pos, spec, host, cell=cell))
    a = np.asarray(_terms(pos, spec, jaxlr.system.from_jax_md(md), cell=cell))
    assert np.abs(b).max() > 1e-2
    np.testing.assert_allclose(a, b, atol=1e-12 * np.abs(b).max())


# --------------------------------------------------------------------------------------
# gradients, jit, dtype
# --------------------------------------------------------------------------------------
def test_gradients_against_finite_differences():
    """Positions, cell (stress-like strain derivative), σ and the GTO widths, periodic."""
    pos, cell, spec = _periodic_system(12)
    nl = _nl(pos, cell)
    rng = np.random.default_rng(12)
    proj = rng.normal(size=(N_ATOMS, 2, NMAX, (LMAX + 1) ** 2))

    @jax.jit
    def f(p, cl, sigma, widths):
        return jnp.sum(_terms(p, spec, nl, cell=cl, sigma=sigma, widths=widths) * proj)

    args = (jnp.asarray(pos), jnp.asarray(cell), jnp.asarray(SIG), jnp.asarray(WIDTHS))
    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*args)
    h = 1e-5
    for k, g in enumerate(grads):
        x = np.asarray(args[k])
        entries = range(x.size) if x.size <= 9 else rng.choice(x.size, 9, replace=False)
        for e in entries:
            dx = np.zeros(x.size)
            dx[e] = h
            dx = jnp.asarray(dx.reshape(x.shape))
            up = [a + dx if i == k else a for i, a in enumerate(args)]
            dn = [a - dx if i == k else a for i, a in enumerate(args)]
            fd = (float(f(*up)) - float(f(*dn))) / (2 * h)
            assert abs(float(np.asarray(g).reshape(-1)[e]) - fd) <= 1e-6 * max(1.0, abs(fd)), (k, e)


@pytest.mark.slow
def test_second_derivatives():
    """Training on forces differentiates forces again: the position Hessian (applied to a
    vector) and the σ-derivative of the position gradient against finite differences."""
    pos, spec = _cluster(17, N_ATOMS)
    nl = _nl(pos)
    proj = np.random.default_rng(17).normal(size=(N_ATOMS, 2, NMAX, (LMAX + 1) ** 2))

    def energy(p, sigma, widths):
        return jnp.sum(_terms(p, spec, nl, sigma=sigma, widths=widths) ** 2 * proj)

    force = jax.jit(jax.grad(energy))
    vec = np.random.default_rng(18).normal(size=pos.shape)
    p0, w0 = jnp.asarray(pos), jnp.asarray(WIDTHS)

    @jax.jit
    def second(p, sigma, widths):
        hvp = jax.jvp(lambda x: force(x, sigma, widths), (p,), (jnp.asarray(vec),))[1]
        dsig = jax.jvp(lambda s: force(p, s, widths), (sigma,), (jnp.ones_like(sigma),))[1]
        dw = jax.jvp(lambda w: force(p, sigma, w), (widths,), (jnp.ones_like(widths),))[1]
        return hvp, dsig, dw

    hvp, dsig, dw = second(p0, jnp.asarray(SIG), w0)
    h = 1e-5
    fd_h = (force(p0 + h * vec, SIG, w0) - force(p0 - h * vec, SIG, w0)) / (2 * h)
    fd_s = (force(p0, SIG + h, w0) - force(p0, SIG - h, w0)) / (2 * h)
    fd_w = (force(p0, SIG, w0 + h) - force(p0, SIG, w0 - h)) / (2 * h)
    for ours, fd in ((hvp, fd_h), (dsig, fd_s), (dw, fd_w)):
        np.testing.assert_allclose(ours, fd, atol=1e-6 * np.abs(fd).max())


def test_front_door_species_and_no_recompile():
    pos, spec = _cluster(13, N_ATOMS)
    nl = _nl(pos)
    z = np.where(spec == 0, 8, 1)
    c = np.asarray(_terms(pos, spec, nl, center_atom_weight=1.0))      # the default: centre included
    kw = dict(cutoff=CUT, max_radial=NMAX, max_angular=LMAX, cutoff_width=WIDTH)
    res = spherical_expansion(pos, z, sigma=SIG, neighbors=nl, **kw)
    assert res.species == (1, 8) and res.max_angular == LMAX
    np.testing.assert_allclose(np.asarray(res.values), c[:, ::-1], atol=1e-13)
    size = _jitted_terms._cache_size()
    res2 = spherical_expansion(pos + 0.01, z, sigma=0.45, neighbors=nl, **kw)
    assert _jitted_terms._cache_size() == size          # new positions and σ: no recompilation
    assert not np.allclose(res2.values, res.values)
    # species_list fixes the channel order
    res3 = spherical_expansion(pos, z, sigma=SIG, species_list=[8, 1], neighbors=nl, **kw)
    assert res3.species == (8, 1)
    np.testing.assert_allclose(np.asarray(res3.values), c, atol=1e-13)
    # the result is a pytree
    leaves = jax.tree_util.tree_leaves(res)
    assert len(leaves) == 1 and leaves[0].shape == res.values.shape


@pytest.mark.slow
def test_jit_equals_eager_and_front_door_under_grad():
    pos, spec = _cluster(13, N_ATOMS)
    nl = _nl(pos)
    eager = spherical_expansion_terms(pos, spec, nl, sigma=SIG, widths=WIDTHS, cutoff_width=WIDTH, **KW)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(_terms(pos, spec, nl, center_atom_weight=1.0)),
                               atol=1e-13)
    z = np.where(spec == 0, 8, 1)

    def loss(p, sigma):
        return jnp.sum(spherical_expansion(p, z, cutoff=CUT, max_radial=NMAX, max_angular=LMAX, sigma=sigma,
                                           cutoff_width=WIDTH).values ** 2)

    # species_list may add empty channels (a new static shape)
    res = spherical_expansion(pos, z, cutoff=CUT, max_radial=NMAX, max_angular=LMAX, sigma=SIG,
                              cutoff_width=WIDTH, species_list=[8, 6, 1])
    assert res.species == (8, 6, 1) and res.values.shape == (N_ATOMS, 3, NMAX, (LMAX + 1) ** 2)
    np.testing.assert_allclose(np.asarray(res.values)[:, [0, 2]], np.asarray(eager), atol=1e-13)
    assert np.all(np.asarray(res.values)[:, 1] == 0)
    g_pos, g_sig = jax.grad(loss, argnums=(0, 1))(jnp.asarray(pos), SIG)
    ref = jax.grad(lambda p, s: jnp.sum(_terms(p, spec, nl, sigma=s, center_atom_weight=1.0) ** 2),
                   argnums=(0, 1))(jnp.asarray(pos), SIG)
    np.testing.assert_allclose(g_pos, ref[0], atol=1e-12)
    np.testing.assert_allclose(g_sig, ref[1], rtol=1e-12)


def test_float32_follows_input():
    pos, spec = _cluster(14, N_ATOMS)
    z = np.where(spec == 0, 8, 1)
    kw = dict(cutoff=CUT, max_radial=NMAX, max_angular=LMAX, sigma=SIG, cutoff_width=WIDTH)
    r64 = spherical_expansion(pos, z, neighbors=_nl(pos), **kw).values
    r32 = spherical_expansion(pos.astype(np.float32), z, neighbors=_nl(pos), **kw).values
    assert r32.dtype == jnp.float32 and r64.dtype == jnp.float64
    # budget: the Löwdin step amplifies float32 round-off by cond(S) ≈ 2e3 at n_max = 5
    np.testing.assert_allclose(np.asarray(r32, np.float64), r64, atol=2e-4 * np.abs(r64).max())


def test_inputs_not_mutated_and_bad_input():
    pos, spec = _cluster(15, 4)
    z = np.where(spec == 0, 8, 1)
    kw = dict(cutoff=CUT, max_radial=NMAX, max_angular=LMAX, sigma=SIG)
    pos0, z0 = pos.copy(), z.copy()
    bad_pos = pos.copy()
    bad_pos[1, 2] = np.nan
    cases = [
        dict(positions=pos[:, :2]),
        dict(positions=bad_pos),
        dict(species=z[:3]),
        dict(species=z + 0.5),
        dict(cutoff=0.0),
        dict(cutoff=-1.0),
        dict(sigma=0.0),
        dict(sigma=-0.3),
        dict(sigma=np.nan),
        dict(max_angular=-1),
        dict(max_radial=0),
        dict(max_angular=2.5),
        dict(species_list=[1]),
        dict(species_list=[1, 1, 8]),
        dict(cell=np.array([[3.0, 0, 0], [3.0, 0, 0], [0, 0, 3.0]])),
        dict(cell=np.eye(2)),
        dict(cutoff_width=0.0),
        dict(cutoff_width=5.0),
        dict(widths=np.ones(3)),
        dict(widths=-np.ones(NMAX)),
        dict(n_quadrature=2),
        dict(n_spline=0),
    ]
    for case in cases:
        args = dict(positions=pos, species=z, **kw)
        args.update(case)
        with pytest.raises(ValueError):
            spherical_expansion(args.pop("positions"), args.pop("species"), **args)
    assert np.array_equal(pos, pos0) and np.array_equal(z, z0)
    # an overflowed (jax-md) list, and a list for another system
    nl = jaxlr.neighbor_list(pos, CUT)
    with pytest.raises(ValueError, match="overflow"):
        spherical_expansion(pos, z, neighbors=jaxlr.Neighbors(nl.idx, nl.mask, None, jnp.asarray(True)), **kw)
    with pytest.raises(ValueError):
        spherical_expansion(pos, z, neighbors=jaxlr.neighbor_list(pos[:3], CUT), **kw)
    # a list with periodic shifts but no cell
    with pytest.raises(ValueError, match="cell"):
        spherical_expansion_terms(pos, spec, jaxlr.neighbor_list(pos, CUT, np.eye(3) * 6.0), sigma=SIG, **KW)


# --------------------------------------------------------------------------------------
# optional: featomic
# --------------------------------------------------------------------------------------
def test_against_featomic():
    """featomic's SphericalExpansion, up to its radial conventions.

    Differences: featomic's Gaussian is L2-normalised, (πσ²)^(−3/4) exp(−r²/2σ²) (ours
    has unit integral); its GTOs are orthonormalised with its own overlap (ours on
    [0, r_c]); its ``max_radial`` is inclusive (n = 0..max_radial).  Both include the centre
    by default (center_atom_weight = 1), which this test relies on.  Both radial conventions are fixed
    linear maps of the same primitive GTO integrals, so featomic = ours @ T for a single
    n_max × n_max matrix T shared by every atom, species, l and m: fit T on one structure
    and check it on a second one.
    """
    featomic = pytest.importorskip("featomic")
    ase = pytest.importorskip("ase")
    calculator = featomic.SphericalExpansion(
        cutoff={"radius": CUT, "smoothing": {"type": "ShiftedCosine", "width": WIDTH}},
        density={"type": "Gaussian", "width": SIG},
        basis={"type": "TensorProduct", "max_angular": LMAX,
               "radial": {"type": "Gto", "max_radial": NMAX - 1}},
    )

    def both(seed):
        pos, spec = _cluster(seed, N_ATOMS)
        z = np.where(spec == 0, 1, 8)
        ours = np.asarray(spherical_expansion(pos, z, cutoff=CUT, max_radial=NMAX, max_angular=LMAX, sigma=SIG,
                                              cutoff_width=WIDTH, neighbors=_nl(pos)).values)
        frame = ase.Atoms(numbers=z, positions=pos)
        theirs = np.zeros_like(ours)
        for key, block in calculator.compute([frame]).items():
            l, zc, zn = int(key["o3_lambda"]), int(key["center_type"]), int(key["neighbor_type"])
            atoms = np.asarray(block.samples.column("atom"))
            assert np.all(z[atoms] == zc)
            vals = np.asarray(block.values)                 # (samples, 2l+1, n)
            for s, a in enumerate(atoms):
                theirs[a, [1, 8].index(zn), :, l * l:(l + 1) ** 2] = vals[s].T
        return ours, theirs

    def rows(x):                                            # (…, n, lm) → (rows, n)
        return np.moveaxis(x, -2, -1).reshape(-1, x.shape[-2])

    ours, theirs = both(21)
    t, *_ = np.linalg.lstsq(rows(ours), rows(theirs), rcond=None)
    np.testing.assert_allclose(rows(ours) @ t, rows(theirs), atol=1e-6 * np.abs(theirs).max())
    ours2, theirs2 = both(22)
    np.testing.assert_allclose(rows(ours2) @ t, rows(theirs2), atol=1e-6 * np.abs(theirs2).max())
