"""Tests of the density-coefficient (multipolar charge equilibration) layer.

``jaxlr.multipoles`` (s/p Gaussian Coulomb kernels and matrices) and ``jaxlr.density``
(basis, solve, polarisability, Coulomb-metric projection) are checked against
independent references, never against themselves alone:

* kernels: scipy/mpmath closed forms and their derivatives, finite differences of the
  s–s kernel, the classical point-dipole formulas, analytic same-centre limits;
* energies: a brute-force 3-D grid quadrature of ½∫ρΦ with analytic potentials,
  ``jaxlr.coulomb_energy`` for s-only densities (open, Ewald, charged background),
  smearing independence with dipoles, the large-box limit with the tin-foil dipole term,
  PME against Ewald;
* solves: the closed-form two-atom Qeq, fragment totals and chemical potentials as
  ∂E/∂Q, gradients against finite differences, polarisability against finite fields,
  rotation/translation/permutation invariance, projection of densities in the span;
* bad input raises ``ValueError``; a non-converged solve is flagged and raises eagerly.

Runtime: compilation dominates (1–3 s per shape or static configuration); the shared
water fixtures reuse shapes.  Heavier variants are marked ``slow``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from conftest import KE, random_rotation
from scipy.special import erf

import jaxlr
from jaxlr._api.density import density_qeq, polarizability
from jaxlr.electrostatics._ewald import half_space_kvectors
from jaxlr.electrostatics._gaussian_multipoles import (
    density_potentials,
    gaussian_kernel,
    interaction_tensor,
    make_pme_matvec,
    multipole_energy,
    multipole_matrix,
    radial_derivatives,
)
from jaxlr.electrostatics._pme import MeshSpec
from jaxlr.equilibration._density import GaussianBasis, assemble_linear, assemble_local, density_solve, per_atom_widths
from jaxlr.equilibration._density_fit import GaussianDensity, project_density
from jaxlr.system._neighbors import with_capacity

SQRT2 = math.sqrt(2.0)
C0 = math.sqrt(2.0 / math.pi)

#: water (Å): O, H, H
WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
WATER_Z = np.array([8, 1, 1])
#: O has two s functions, H one (padding slot), one p function each: n_basis = 5
BASIS = GaussianBasis(species=(1, 8), s_widths=((0.5,), (0.4, 0.9)), p_widths=((0.6,), (0.55,)))


@functools.lru_cache(maxsize=None)
def energy_fn(method="direct", background=False, mesh=None):
    """Jitted ``multipole_energy`` (eager evaluation compiles every small op: much slower)."""
    def f(coef, pos, sig_s, sig_p, cell=None, smearing=None, nl=None, kv=None):
        return multipole_energy(coef, pos, sig_s, sig_p, cell=cell, method=method, smearing=smearing,
                                neighbors=nl, kvectors=kv, mesh=mesh, background=background)
    return jax.jit(f)


@functools.lru_cache(maxsize=None)
def coulomb_fn(method, background=False):
    def f(pos, q, sigma, cell=None, smearing=None, nl=None, kv=None):
        return jaxlr.coulomb_energy(pos, q, cell=cell, sigma=sigma, smearing=smearing, neighbors=nl, kvectors=kv,
                                    method=method, background=background)
    return jax.jit(f)


def invariant_terms(species, basis=BASIS):
    """Rotation-invariant linear (N, nb) and local (N, nb, nb) terms per species (numpy)."""
    chi = {8: [4.0, 2.5], 1: [-3.0, 0.0]}
    ss = {8: [[9.0, 1.0], [1.0, 6.0]], 1: [[7.0, 0.0], [0.0, 1.0]]}
    pp = {8: [[3.0]], 1: [[4.0]]}
    lin = np.array([chi[z] for z in species])
    h_ss = np.array([ss[z] for z in species])
    h_pp = np.array([pp[z] for z in species])
    return (np.asarray(assemble_linear(jnp.asarray(lin), n_p=basis.n_p)),
            np.asarray(assemble_local(jnp.asarray(h_ss), jnp.asarray(h_pp))))


def random_terms(seed, n, nb):
    """Random linear terms and random SPD local matrices (not rotation invariant)."""
    rng = np.random.default_rng(seed)
    lin = rng.normal(size=(n, nb)) * 2.0
    a = rng.normal(size=(n, nb, nb))
    local = np.einsum("nab,ncb->nac", a, a) * 0.5 + 3.0 * np.eye(nb)
    return lin, local


# ======================================================================================
# kernels
# ======================================================================================
@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.5])
def test_gaussian_kernel_closed_form(gamma):
    r = np.array([1e-6, 1e-3, 0.05, 0.3, 0.7, SQRT2 * 0.5 * gamma * 0.999, SQRT2 * 0.5 * gamma * 1.001,
                  1.0, 2.0, 5.0, 12.0]) * gamma
    got = np.asarray(gaussian_kernel(jnp.asarray(r * r), gamma))
    np.testing.assert_allclose(got, erf(r / (SQRT2 * gamma)) / r, rtol=2e-15)
    assert float(gaussian_kernel(0.0, gamma)) == pytest.approx(C0 / gamma, rel=1e-15)


def _mp_kernel(u, gamma, smearing=None):
    u, gamma = mpmath.mpf(u), mpmath.mpf(gamma)
    r = mpmath.sqrt(u)
    k = mpmath.erf(r / (mpmath.sqrt(2) * gamma)) / r
    if smearing is not None:
        k -= mpmath.erf(r / (mpmath.sqrt(2) * mpmath.mpf(smearing))) / r
    return k


@pytest.mark.parametrize("smearing", [None, 1.3])
def test_radial_derivatives_vs_mpmath(smearing):
    """K, dK/du, d²K/du² against 30-digit numerical differentiation, across both series switches."""
    mpmath.mp.dps = 40
    gamma = 0.8
    us = [1e-3, 0.5 * gamma**2 * 0.98, 0.5 * gamma**2 * 1.02, 0.7, 2.0 * 1.3**2 * 0.99, 2.0 * 1.3**2 * 1.01,
          6.0, 40.0]
    for u in us:
        k, k1, k2 = (float(x) for x in radial_derivatives(jnp.asarray(u), gamma, smearing))
        ref = [float(mpmath.diff(lambda v: _mp_kernel(v, gamma, smearing), u, m)) for m in range(3)]
        for got, want in zip((k, k1, k2), ref):
            assert got == pytest.approx(want, rel=1e-11, abs=1e-14 * abs(ref[0]))
    # u = 0: Taylor coefficients of √(2/π)/γ (1 − y/3 + y²/10), y = u/2γ²
    k, k1, k2 = (float(x) for x in radial_derivatives(jnp.asarray(0.0), gamma))
    assert (k, k1, k2) == pytest.approx((C0 / gamma, -C0 / (6 * gamma**3), C0 / (20 * gamma**5)), rel=1e-14)


def _k_np(d, gamma):
    """s–s kernel of a displacement (numpy, scipy erf), with the r → 0 limit."""
    r = np.linalg.norm(d)
    return C0 / gamma if r == 0 else erf(r / (SQRT2 * gamma)) / r


@jax.jit
def _tensor_and_autodiff(d, gamma):
    def k(dd):
        return gaussian_kernel(jnp.sum(dd * dd), gamma)
    return interaction_tensor(d, gamma), jax.grad(k)(d), jax.hessian(k)(d)


@pytest.mark.parametrize("d", [np.array([0.7, -0.4, 1.1]), np.array([0.05, 0.02, -0.03]), np.zeros(3)])
def test_interaction_tensor_vs_finite_differences(d):
    """s–p and p–p entries are derivatives of the s–s kernel w.r.t. the centres (p = ∂g/∂R)."""
    gamma, h = 0.9, 1e-4
    t, grad, hess = (np.asarray(x) for x in _tensor_and_autodiff(jnp.asarray(d), gamma))
    e = np.eye(3)
    ref = np.zeros((4, 4))
    ref[0, 0] = _k_np(d, gamma)
    for b in range(3):   # s(i)–p_b(j): ∂/∂R_jb with d = R_j − R_i
        ref[0, 1 + b] = (_k_np(d + h * e[b], gamma) - _k_np(d - h * e[b], gamma)) / (2 * h)
        ref[1 + b, 0] = (_k_np(d + h * e[b], gamma) - _k_np(d - h * e[b], gamma)) / (-2 * h)
    for a in range(3):   # p_a(i)–p_b(j): ∂²/∂R_ia ∂R_jb
        for b in range(3):
            ref[1 + a, 1 + b] = (_k_np(d + h * e[b] - h * e[a], gamma) - _k_np(d + h * e[b] + h * e[a], gamma)
                                 - _k_np(d - h * e[b] - h * e[a], gamma)
                                 + _k_np(d - h * e[b] + h * e[a], gamma)) / (4 * h * h)
    np.testing.assert_allclose(t, ref, rtol=1e-6, atol=1e-7)
    # and against plain autodiff of the s–s kernel with respect to d
    np.testing.assert_allclose(t[0, 1:], grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t[1:, 1:], -hess, rtol=1e-12, atol=1e-15)
    if not np.any(d):   # same centre: s–p vanishes, p–p = √(2/π)/(3γ³) δ
        np.testing.assert_allclose(t[0, 1:], 0.0, atol=1e-15)
        np.testing.assert_allclose(t[1:, 1:], np.eye(3) * C0 / (3 * gamma**3), rtol=1e-14)


def test_point_dipole_limit():
    """Narrow Gaussians far apart: charge–dipole μ·(R_i − R_j)/r³ and (δ − 3nn)/r³ for dipoles."""
    rng = np.random.default_rng(3)
    d = rng.normal(size=3)
    d *= 6.0 / np.linalg.norm(d)
    r = np.linalg.norm(d)
    n = d / r
    t = np.asarray(interaction_tensor(jnp.asarray(d), 0.05))
    assert t[0, 0] == pytest.approx(1.0 / r, rel=1e-14)
    np.testing.assert_allclose(t[0, 1:], -d / r**3, rtol=1e-12)   # charge at R_i, dipole at R_j
    np.testing.assert_allclose(t[1:, 0], d / r**3, rtol=1e-12)    # dipole at R_i, charge at R_j
    np.testing.assert_allclose(t[1:, 1:], (np.eye(3) - 3 * np.outer(n, n)) / r**3, rtol=1e-12, atol=1e-15)


# ======================================================================================
# Coulomb energies of coefficient sets
# ======================================================================================
def _f_and_slope(rho, sig):
    """f(ρ) = erf(ρ/√2σ)/ρ and f'(ρ) (numpy), with a series near ρ = 0."""
    y = rho**2 / (2 * sig**2)
    small = y < 0.01
    rs = np.where(small, 1.0, rho)
    f = np.where(small, C0 / sig * (1 - y / 3 + y**2 / 10 - y**3 / 42),
                 erf(rs / (SQRT2 * sig)) / rs)
    slope = np.where(small, C0 / sig * (rho / sig**2) * (-1 / 3 + y / 5 - y**2 / 14),
                     (C0 / sig * np.exp(-y) - f) / rs)
    return f, slope


def test_open_energy_vs_grid_quadrature():
    """½ cᵀCc against KE/2 ∫ρΦ on a grid, with the analytic potentials of s and p Gaussians."""
    rng = np.random.default_rng(7)
    pos = np.array([[0.0, 0.0, 0.0], [0.9, 0.5, -0.6]])
    sig_s = np.array([[0.5, 0.75], [0.45, 0.8]])
    sig_p = np.array([[0.6], [0.55]])
    coef = rng.normal(size=(2, 5))
    e_lib = float(energy_fn()(jnp.asarray(coef), jnp.asarray(pos), jnp.asarray(sig_s), jnp.asarray(sig_p)))

    h = 0.45 / 3.2
    lo, hi = pos.min(0) - 8 * 0.8, pos.max(0) + 8 * 0.8
    axes = [np.arange(lo[a] + 0.37 * h, hi[a], h) for a in range(3)]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    rho = np.zeros(x.shape[:3])
    phi = np.zeros(x.shape[:3])
    for i in range(2):
        dx = x - pos[i]
        dist = np.linalg.norm(dx, axis=-1)
        funcs = [(sig_s[i, 0], coef[i, 0], None), (sig_s[i, 1], coef[i, 1], None)]
        funcs += [(sig_p[i, 0], coef[i, 2 + b], b) for b in range(3)]
        for sig, c, b in funcs:
            g = (2 * np.pi * sig**2) ** -1.5 * np.exp(-dist**2 / (2 * sig**2))
            f, slope = _f_and_slope(dist, sig)
            if b is None:
                rho += c * g
                phi += c * f
            else:   # p_b = −∂_b g = (x − R)_b/σ² g; its potential is ∂f(|x − R|)/∂R_b
                rho += c * dx[..., b] / sig**2 * g
                phi += c * slope * (-dx[..., b] / np.where(dist > 0, dist, 1.0))
    e_grid = 0.5 * KE * np.sum(rho * phi) * h**3
    assert e_lib == pytest.approx(e_grid, rel=1e-9)


def test_s_only_equals_jaxlr_coulomb():
    """With s functions only, the energy is jaxlr.coulomb_energy of Gaussian charges (open, Ewald, background)."""
    rng = np.random.default_rng(11)
    n = 8
    cell = np.eye(3) * 6.0 @ (np.eye(3) + 0.1 * rng.uniform(-1, 1, (3, 3)))
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    sig = rng.uniform(0.4, 0.9, n)
    q = rng.normal(size=n)
    q -= q.mean()
    args = (jnp.asarray(pos), jnp.asarray(sig[:, None]), jnp.zeros((n, 0)))
    e_open = energy_fn()(jnp.asarray(q[:, None]), *args)
    ref_open = coulomb_fn("direct")(jnp.asarray(pos), jnp.asarray(q), jnp.asarray(sig))
    assert float(e_open) == pytest.approx(float(ref_open), rel=1e-13)
    s = 1.1
    nl = jaxlr.neighbor_list(pos, 10.0, cell)
    kv = jnp.asarray(half_space_kvectors(cell, 8.0))
    # the background term vanishes for a neutral cell: one compilation covers both cases
    for charges in (q, q + 0.1):
        e = energy_fn("ewald", True)(jnp.asarray(charges[:, None]), *args, jnp.asarray(cell), s, nl, kv)
        ref = coulomb_fn("ewald", True)(jnp.asarray(pos), jnp.asarray(charges), jnp.asarray(sig), jnp.asarray(cell),
                                        s, nl, kv)
        assert float(e) == pytest.approx(float(ref), rel=1e-12, abs=1e-12)


def _periodic_case(seed=5, n=10):
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * 6.5 @ (np.eye(3) + 0.1 * rng.uniform(-1, 1, (3, 3)))
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    sig_s = rng.uniform(0.4, 0.9, (n, 2))
    sig_p = rng.uniform(0.4, 0.9, (n, 1))
    coef = rng.normal(size=(n, 5))
    coef[:, :2] -= coef[:, :2].sum() / (2 * n)
    return pos, cell, sig_s, sig_p, coef


def test_ewald_smearing_independence_with_dipoles():
    """The periodic energy of s+p densities does not depend on the Ewald smearing (also charged)."""
    pos, cell, sig_s, sig_p, coef = _periodic_case()
    x = 6.5
    charged = coef.copy()
    charged[0, 0] += 0.6
    # one neighbour list and k-vector set that suffice for both smearings: one compilation
    nl = jaxlr.neighbor_list(pos, SQRT2 * x * 1.6, cell)
    kv = jnp.asarray(half_space_kvectors(cell, SQRT2 * x / 0.9))
    for c in (coef, charged):   # neutral (background term zero) and charged
        energies = []
        for s in (0.9, 1.6):
            energies.append(float(energy_fn("ewald", True)(
                jnp.asarray(c), jnp.asarray(pos), jnp.asarray(sig_s), jnp.asarray(sig_p), jnp.asarray(cell), s, nl,
                kv)))
        assert energies[0] == pytest.approx(energies[1], rel=1e-11)


def test_large_box_limit_tin_foil():
    """A neutral molecule in a cubic box: E_periodic − E_open = −(2π KE/3V)|M|² + O(L⁻⁵).

    The dipole's own images cancel by cubic symmetry, the tin-foil boundary removes the
    surface term; what is left decays as L⁻⁵ (quadrupole–quadrupole, dipole–octupole).
    """
    rng = np.random.default_rng(2)
    pos = WATER + 3.0
    sig_s = np.array([[0.4, 0.9], [0.5, 0.7], [0.5, 0.7]])
    sig_p = np.array([[0.55], [0.6], [0.6]])
    coef = rng.normal(size=(3, 5)) * 0.3
    coef[:, :2] -= coef[:, :2].sum() / 6
    args = (jnp.asarray(coef), jnp.asarray(pos), jnp.asarray(sig_s), jnp.asarray(sig_p))
    e_open = float(energy_fn()(*args))
    moment = coef[:, :2].sum(1) @ pos + coef[:, 2:].sum(0)
    rest = []
    s = 3.0
    lengths = (30.0, 45.0)
    # pad the k-vectors (zero vectors add nothing) and the neighbour lists to common shapes
    kvs = [half_space_kvectors(np.eye(3) * length, SQRT2 * 6.0 / s) for length in lengths]
    chunks = max(len(k) for k in kvs)
    kvs = [np.concatenate([k, np.zeros((chunks - len(k),) + k.shape[1:])]) for k in kvs]
    nls = [jaxlr.neighbor_list(pos, SQRT2 * 6.0 * s, np.eye(3) * length) for length in lengths]
    capacity = max(nl.capacity for nl in nls)
    for length, kv, nl in zip(lengths, kvs, nls):
        cell = np.eye(3) * length
        nl = with_capacity(nl, capacity)
        e_per = float(energy_fn("ewald")(*args, jnp.asarray(cell), s, nl, jnp.asarray(kv)))
        tin_foil = -2 * math.pi * KE * float(moment @ moment) / (3 * length**3)
        assert e_per - e_open == pytest.approx(tin_foil, rel=1e-2)
        rest.append((e_per - e_open - tin_foil) * length**5)
    assert rest[0] == pytest.approx(rest[1], rel=0.1)


def test_pme_matvec_matches_ewald():
    pos, cell, sig_s, sig_p, coef = _periodic_case(seed=8, n=12)
    s = 1.3
    nl = jaxlr.neighbor_list(pos, SQRT2 * 6.0 * s, cell)
    kv = jnp.asarray(half_space_kvectors(cell, SQRT2 * 6.0 / s))
    args = (jnp.asarray(pos), jnp.asarray(sig_s), jnp.asarray(sig_p))
    matrix = jax.jit(lambda p, a, b, c, sm, nbrs, k: multipole_matrix(p, a, b, cell=c, smearing=sm, neighbors=nbrs,
                                                                     kvectors=k, background=True))
    mat = matrix(*args, jnp.asarray(cell), s, nl, kv)
    np.testing.assert_allclose(mat, mat.T, atol=1e-12)
    ref = np.asarray(mat @ coef.reshape(-1)).reshape(coef.shape)
    mv = jax.jit(make_pme_matvec(MeshSpec((20, 20, 20), 8)), static_argnums=7)
    got = np.asarray(mv(jnp.asarray(coef), args[0], args[1], args[2], jnp.asarray(cell), s, nl, True))
    # h/s ≈ 0.25 with order 8: ~1e-8 of the largest entry (tuning rule in tune_density)
    assert np.abs(got - ref).max() < 1e-7 * np.abs(ref).max()


# ======================================================================================
# solves
# ======================================================================================
def test_plain_qeq_two_atoms_closed_form():
    """One s function per atom, no p: the solve is plain Qeq, q_A = (χ_B − χ_A)/D."""
    basis = GaussianBasis(species=(3, 9), s_widths=((0.8,), (0.6,)))
    pos = np.array([[0.0, 0.0, 0.0], [1.6, 0.0, 0.0]])
    chi = np.array([[-1.0], [3.0]])
    hard = np.array([[[6.0]], [[9.0]]])
    res = density_qeq(pos, np.array([3, 9]), chi, hard, basis=basis)
    sa, sb, r = 0.8, 0.6, 1.6
    c_aa, c_bb = KE / (math.sqrt(math.pi) * sa), KE / (math.sqrt(math.pi) * sb)
    c_ab = KE * erf(r / (SQRT2 * math.hypot(sa, sb))) / r
    denom = 6.0 + 9.0 + c_aa + c_bb - 2 * c_ab
    q = (3.0 - (-1.0)) / denom
    np.testing.assert_allclose(res.charges, [q, -q], rtol=1e-12)
    assert float(res.energy) == pytest.approx(-0.5 * 4.0**2 / denom, rel=1e-12)
    np.testing.assert_allclose(res.dipoles, 0.0, atol=0)


def test_water_solution_properties():
    lin, loc = invariant_terms(WATER_Z)
    res = density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS)
    assert bool(res.converged) and float(res.residual) < 1e-12
    assert float(res.charges.sum()) == pytest.approx(0.0, abs=1e-12)
    assert res.charges[0] < 0 and res.charges[1] > 0
    # the H padding slot (second s function) stays zero
    np.testing.assert_array_equal(np.asarray(res.coefficients[1:, 1]), 0.0)
    np.testing.assert_allclose(res.total_dipole, res.charges @ WATER + res.dipoles.sum(0), atol=1e-14)
    # symmetry of the molecule (mirror x → −x and y → −y): dipole along z only
    np.testing.assert_allclose(res.total_dipole[:2], 0.0, atol=1e-12)
    # the stationarity condition, rebuilt independently of the solver from the dense matrix
    sig_s, sig_p, active = per_atom_widths(BASIS.index(WATER_Z), *map(jnp.asarray, BASIS.width_arrays()), BASIS)
    cmat = np.asarray(jax.jit(multipole_matrix)(jnp.asarray(WATER), sig_s, sig_p))
    c = np.asarray(res.coefficients).reshape(-1)
    grad = cmat @ c + np.einsum("nab,nb->na", loc, res.coefficients).reshape(-1) + lin.reshape(-1)
    s_slots = (np.arange(BASIS.n_basis) < BASIS.n_s)[None, :] & active
    used = active.reshape(-1)
    np.testing.assert_allclose(grad[used & s_slots.reshape(-1)], float(res.chemical_potential[0]), atol=1e-10)
    np.testing.assert_allclose(grad[used & ~s_slots.reshape(-1)], 0.0, atol=1e-10)
    e = 0.5 * c @ cmat @ c + 0.5 * np.einsum("na,nab,nb->", res.coefficients, loc, res.coefficients) + lin.reshape(-1) @ c
    assert float(res.energy) == pytest.approx(e, rel=1e-12)
    # the PCG solver agrees with the dense one
    res_cg = density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, solver="pcg", tol=1e-12)
    np.testing.assert_allclose(res_cg.coefficients, res.coefficients, atol=1e-10)


def test_fragments_and_chemical_potentials():
    pos = np.concatenate([WATER, WATER + np.array([4.0, 1.0, 0.5])])
    z = np.concatenate([WATER_Z, WATER_Z])
    lin, loc = invariant_terms(z)
    frags = np.array([0, 0, 0, 1, 1, 1])
    qf = np.array([1.0, -1.0])
    res = density_qeq(pos, z, lin, loc, basis=BASIS, fragments=frags, fragment_charges=qf)
    np.testing.assert_allclose([res.charges[:3].sum(), res.charges[3:].sum()], qf, atol=1e-12)
    mu = jax.grad(lambda q: density_qeq(pos, z, lin, loc, basis=BASIS, fragments=frags, fragment_charges=q).energy)(
        jnp.asarray(qf))
    np.testing.assert_allclose(mu, res.chemical_potential, rtol=1e-9)
    h = 1e-5
    for f in range(2):
        dq = np.eye(2)[f] * h
        ep = density_qeq(pos, z, lin, loc, basis=BASIS, fragments=frags, fragment_charges=qf + dq).energy
        em = density_qeq(pos, z, lin, loc, basis=BASIS, fragments=frags, fragment_charges=qf - dq).energy
        assert float(res.chemical_potential[f]) == pytest.approx(float(ep - em) / (2 * h), rel=1e-7)
    # a total_charge consistent with the fragment totals is accepted
    shifted = density_qeq(pos, z, lin, loc, basis=BASIS, fragments=frags, fragment_charges=qf + 0.5,
                          total_charge=1.0)
    np.testing.assert_allclose([shifted.charges[:3].sum(), shifted.charges[3:].sum()], qf + 0.5, atol=1e-12)


def _fd_check(fun, args, seed, h=1e-5, rtol=1e-6):
    """Directional finite differences of a scalar ``fun(*args)`` against ``jax.grad``."""
    rng = np.random.default_rng(seed)
    fun = jax.jit(fun)  # compiled once for all the evaluations (eager ones cost seconds)
    grads = jax.jit(jax.grad(fun, argnums=tuple(range(len(args)))))(*args)
    for i, (a, g) in enumerate(zip(args, grads)):
        v = rng.normal(size=np.shape(a))
        if np.ndim(a) == 3 and np.shape(a)[-1] == np.shape(a)[-2]:
            v = v + np.swapaxes(v, -1, -2)   # local matrices: symmetric directions
        plus = [jnp.asarray(x) for x in args]
        minus = list(plus)
        plus[i] = plus[i] + h * v
        minus[i] = minus[i] - h * v
        fd = (float(fun(*plus)) - float(fun(*minus))) / (2 * h)
        assert float(jnp.sum(g * v)) == pytest.approx(fd, rel=rtol, abs=1e-9), f"argument {i}"


def test_gradients_through_the_solve_open():
    """∂/∂(linear, local, widths, positions, field) of energy + coefficient and dipole functionals."""
    lin, loc = random_terms(1, 3, BASIS.n_basis)
    s_w, p_w = BASIS.width_arrays()
    rng = np.random.default_rng(4)
    weights = jnp.asarray(rng.normal(size=(3, BASIS.n_basis)))
    probe = jnp.asarray(rng.normal(size=3))

    def fun(linear, local, sw, pw, positions, field):
        res = density_qeq(positions, WATER_Z, linear, local, basis=BASIS, widths=(sw, pw), field=field)
        return res.energy + jnp.sum(weights * res.coefficients) + probe @ res.total_dipole

    _fd_check(fun, (lin, loc, s_w, p_w, WATER, np.array([0.05, -0.02, 0.1])), seed=9)


@pytest.mark.slow
def test_force_derivatives_second_order():
    """∂F/∂b (training on forces): grad-of-grad through the implicit solve vs finite differences."""
    lin, loc = random_terms(7, 3, BASIS.n_basis)
    probe = jnp.asarray(np.random.default_rng(8).normal(size=(3, 3)))

    def forces(linear):
        return -jax.grad(lambda r: density_qeq(r, WATER_Z, linear, loc, basis=BASIS).energy)(jnp.asarray(WATER))

    def loss(linear):
        return jnp.sum(probe * forces(linear))

    g = jax.grad(loss)(jnp.asarray(lin))
    v = np.random.default_rng(9).normal(size=lin.shape)
    h = 1e-5
    fd = (float(loss(jnp.asarray(lin + h * v))) - float(loss(jnp.asarray(lin - h * v)))) / (2 * h)
    assert float(jnp.sum(g * v)) == pytest.approx(fd, rel=1e-6)
    # Hellmann–Feynman: at the minimum the forces are −∂E/∂R at fixed coefficients
    res = density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS)
    sig_s, sig_p, _ = per_atom_widths(BASIS.index(WATER_Z), *map(jnp.asarray, BASIS.width_arrays()), BASIS)
    coul = jax.grad(lambda r: energy_fn()(res.coefficients, r, sig_s, sig_p))(jnp.asarray(WATER))
    np.testing.assert_allclose(forces(jnp.asarray(lin)), -coul, atol=1e-9)


@pytest.mark.slow
def test_gradients_through_the_solve_periodic():
    """Positions and smearing through the Ewald solve (functional core, fixed neighbour list)."""
    pos, cell, sig_s, sig_p, _ = _periodic_case(seed=12, n=6)
    lin, loc = random_terms(2, 6, 5)
    s = 1.2
    nl = jaxlr.neighbor_list(pos, SQRT2 * 5.5 * 1.3 + 0.5, cell)
    kv = jnp.asarray(half_space_kvectors(cell, SQRT2 * 6.0 / s))
    weights = jnp.asarray(np.random.default_rng(5).normal(size=(6, 5)))

    @jax.jit
    def fun(positions, sw, smearing):
        res = density_solve(positions, sw, jnp.asarray(sig_p), jnp.asarray(lin), jnp.asarray(loc),
                            cell=jnp.asarray(cell), smearing=smearing, neighbors=nl, kvectors=kv, method="ewald")
        return res.energy + jnp.sum(weights * res.coefficients)

    _fd_check(fun, (pos, sig_s, s), seed=6)
    # the minimum does not depend on the smearing
    g = jax.grad(fun, argnums=2)(jnp.asarray(pos), jnp.asarray(sig_s), s)
    assert abs(float(g)) < 1e-7


def test_polarizability_symmetric_positive_and_finite_field():
    lin, loc = invariant_terms(WATER_Z)
    alpha = np.asarray(polarizability(WATER, WATER_Z, lin, loc, basis=BASIS))
    np.testing.assert_allclose(alpha, alpha.T, atol=1e-12)
    assert np.linalg.eigvalsh(alpha).min() > 0
    h = 1e-3
    fd = np.stack([(density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, field=h * e).total_dipole
                    - density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, field=-h * e).total_dipole) / (2 * h)
                   for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(alpha, fd, rtol=1e-8, atol=1e-12)
    # α = −∂²E*/∂F²: second derivatives through the implicit solve
    hess = jax.hessian(lambda f: density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, field=f).energy)(jnp.zeros(3))
    np.testing.assert_allclose(-np.asarray(hess), alpha, rtol=1e-9, atol=1e-12)


def test_rotation_translation_permutation():
    lin, loc = invariant_terms(WATER_Z)
    rng = np.random.default_rng(0)
    field = np.array([0.02, -0.05, 0.03])
    ref = density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, field=field)
    rot = random_rotation(1)
    res = density_qeq(WATER @ rot.T, WATER_Z, lin, loc, basis=BASIS, field=rot @ field)
    np.testing.assert_allclose(res.charges, ref.charges, atol=1e-12)
    np.testing.assert_allclose(res.dipoles, ref.dipoles @ rot.T, atol=1e-12)
    assert float(res.energy) == pytest.approx(float(ref.energy), rel=1e-12)
    shift = rng.normal(size=3) * 3
    res = density_qeq(WATER + shift, WATER_Z, lin, loc, basis=BASIS, field=field)
    np.testing.assert_allclose(res.coefficients, ref.coefficients, atol=1e-12)
    np.testing.assert_allclose(res.total_dipole, ref.total_dipole, atol=1e-12)   # neutral
    assert float(res.energy) == pytest.approx(float(ref.energy), rel=1e-12)
    perm = np.array([2, 0, 1])
    res = density_qeq(WATER[perm], WATER_Z[perm], lin[perm], loc[perm], basis=BASIS, field=field)
    np.testing.assert_allclose(res.coefficients, ref.coefficients[perm], atol=1e-12)
    assert float(res.energy) == pytest.approx(float(ref.energy), rel=1e-12)
    alpha = polarizability(WATER, WATER_Z, lin, loc, basis=BASIS)
    alpha_rot = polarizability(WATER @ rot.T, WATER_Z, lin, loc, basis=BASIS)
    np.testing.assert_allclose(alpha_rot, rot @ alpha @ rot.T, atol=1e-12)


@pytest.mark.slow
def test_periodic_pme_solve_matches_ewald():
    cell = np.eye(3) * 5.5
    pos = np.concatenate([WATER + 0.5, WATER @ random_rotation(2).T + np.array([2.9, 3.0, 2.6])])
    z = np.concatenate([WATER_Z, WATER_Z])
    lin, loc = invariant_terms(z)
    ew = density_qeq(pos, z, lin, loc, basis=BASIS, cell=cell, method="ewald", accuracy=1e-8)
    pme = density_qeq(pos, z, lin, loc, basis=BASIS, cell=cell, method="pme", accuracy=1e-8)
    assert ew.params.method == "ewald" and pme.params.method == "pme" and pme.params.solver == "pcg"
    assert bool(pme.converged) and int(pme.iterations) > 0
    np.testing.assert_allclose(pme.coefficients, ew.coefficients, atol=1e-6)
    assert float(pme.energy) == pytest.approx(float(ew.energy), rel=1e-7)


@pytest.mark.slow
def test_periodic_translation_and_supercell():
    """Shifting the cell content changes nothing; a 2×1×1 supercell doubles energy and repeats charges."""
    cell = np.eye(3) * 5.5
    pos = np.concatenate([WATER + 0.5, WATER @ random_rotation(2).T + np.array([2.9, 3.0, 2.6])])
    z = np.concatenate([WATER_Z, WATER_Z])
    lin, loc = invariant_terms(z)
    ref = density_qeq(pos, z, lin, loc, basis=BASIS, cell=cell, method="ewald", accuracy=1e-9)
    shifted = density_qeq(pos + np.array([1.3, -0.4, 2.2]), z, lin, loc, basis=BASIS, cell=cell, method="ewald",
                          accuracy=1e-9)
    np.testing.assert_allclose(shifted.coefficients, ref.coefficients, atol=1e-9)
    big = np.diag([2.0, 1.0, 1.0]) @ cell
    pos2 = np.concatenate([pos, pos + cell[0]])
    sup = density_qeq(pos2, np.tile(z, 2), np.tile(lin, (2, 1)), np.tile(loc, (2, 1, 1)), basis=BASIS, cell=big,
                      method="pme", accuracy=1e-9)
    np.testing.assert_allclose(sup.coefficients, np.tile(ref.coefficients, (2, 1)), atol=1e-7)
    assert float(sup.energy) == pytest.approx(2 * float(ref.energy), rel=1e-8)


def test_not_converged_is_flagged_and_raises():
    lin, loc = random_terms(3, 3, BASIS.n_basis)
    sig_s, sig_p, active = per_atom_widths(BASIS.index(WATER_Z), *map(jnp.asarray, BASIS.width_arrays()), BASIS)
    solve = jax.jit(lambda *a: density_solve(*a, active=active, solver="pcg", tol=1e-14, maxiter=1))
    res = solve(jnp.asarray(WATER), sig_s, sig_p, jnp.asarray(lin), jnp.asarray(loc))
    assert not bool(res.converged) and float(res.residual) > 1e-14 and int(res.iterations) == 1
    with pytest.raises(ValueError, match="did not converge"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, solver="pcg", tol=1e-14, maxiter=1)


def test_no_recompilation_and_float32():
    dmod = importlib.import_module("jaxlr._api.density")
    lin, loc = invariant_terms(WATER_Z)
    density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS)
    size = dmod._run._cache_size()
    density_qeq(WATER * 1.02, WATER_Z, lin * 1.1, loc, basis=BASIS)
    assert dmod._run._cache_size() == size
    ref = density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS)
    res = density_qeq(WATER.astype(np.float32), WATER_Z, lin.astype(np.float32), loc.astype(np.float32),
                      basis=BASIS)
    assert res.coefficients.dtype == jnp.float32 and res.energy.dtype == jnp.float32
    # float32: charges of O(1) e, condition number ~1e2 → ~1e-5 absolute
    np.testing.assert_allclose(res.coefficients, ref.coefficients, atol=2e-5)


# ======================================================================================
# projection onto the basis
# ======================================================================================
def test_projection_recovers_coefficients_in_span():
    rng = np.random.default_rng(21)
    coef = rng.normal(size=(3, BASIS.n_basis)) * 0.5
    coef[1:, 1] = 0.0   # H has one s function
    s_w, p_w = BASIS.width_arrays()
    idx = BASIS.index(WATER_Z)
    # the same density written as a GaussianDensity: one entry per (atom, shell)
    centres, widths, charges, dipoles = [], [], [], []
    for i, a in enumerate(idx):
        for k, w in enumerate(BASIS.s_widths[a]):
            centres.append(WATER[i]); widths.append(w); charges.append(coef[i, k]); dipoles.append(np.zeros(3))
        for k, w in enumerate(BASIS.p_widths[a]):
            centres.append(WATER[i]); widths.append(w); charges.append(0.0)
            dipoles.append(coef[i, BASIS.n_s + 3 * k: BASIS.n_s + 3 * k + 3])
    rho = GaussianDensity(centres=np.array(centres), widths=np.array(widths), charges=np.array(charges),
                          dipoles=np.array(dipoles))
    fit = project_density(WATER, WATER_Z, basis=BASIS, density=rho)
    np.testing.assert_allclose(fit.coefficients, coef, atol=1e-9)
    assert abs(float(fit.error)) < 1e-9
    # the rhs entry point: v = C c
    sig_s, sig_p, _ = per_atom_widths(idx, jnp.asarray(s_w), jnp.asarray(p_w), BASIS)
    v = jax.jit(density_potentials)(jnp.asarray(WATER), sig_s, sig_p, jnp.asarray(rho.centres),
                                    jnp.asarray(rho.widths), jnp.asarray(rho.charges), jnp.asarray(rho.dipoles))
    fit2 = project_density(WATER, WATER_Z, basis=BASIS, rhs=v, total_charge=float(coef[:, :2].sum()))
    np.testing.assert_allclose(fit2.coefficients, coef, atol=1e-9)
    assert fit2.error is None


def test_projection_outside_span_constrained_charge():
    """A density off the atoms: positive residual energy, exact total charge when asked."""
    rng = np.random.default_rng(3)
    # seven Gaussians (the shape of the in-span test's density: shared compilation)
    rho = GaussianDensity(centres=WATER[[0, 0, 1, 2, 0, 1, 2]] + 0.25 * rng.normal(size=(7, 3)),
                          widths=rng.uniform(0.5, 0.9, 7),
                          charges=np.array([-1.5, 0.4, -0.3, 0.1, 0.2, -0.1, 0.1]))
    free = project_density(WATER, WATER_Z, basis=BASIS, density=rho)
    fixed = project_density(WATER, WATER_Z, basis=BASIS, density=rho, total_charge=-1.1)
    assert float(free.error) > 0 and float(fixed.error) >= float(free.error) - 1e-12
    assert float(fixed.charges.sum()) == pytest.approx(-1.1, abs=1e-12)
    # c = 0 leaves the whole self-energy as the residual: the fit removes most of it
    assert float(free.error) < 0.2 * float(_self_energy(rho))


def _self_energy(rho):
    d = rho.centres[:, None] - rho.centres[None]
    r = np.linalg.norm(d, axis=-1)
    gam = np.hypot(rho.widths[:, None], rho.widths[None])
    k = np.where(r > 0, erf(r / (SQRT2 * gam)) / np.where(r > 0, r, 1.0), C0 / gam)
    return 0.5 * KE * rho.charges @ k @ rho.charges


# ======================================================================================
# bad input
# ======================================================================================
def test_bad_input_raises():
    lin, loc = invariant_terms(WATER_Z)
    nb = BASIS.n_basis
    with pytest.raises(ValueError, match="positive"):
        GaussianBasis(species=(1,), s_widths=((0.0,),))
    with pytest.raises(ValueError, match="positive"):
        GaussianBasis(species=(1,), s_widths=((0.5,),), p_widths=((-1.0,),))
    with pytest.raises(ValueError, match="no s function"):
        GaussianBasis(species=(1,), s_widths=((),), p_widths=((0.5,),))
    with pytest.raises(ValueError, match="strictly positive"):
        s_w, p_w = BASIS.width_arrays()
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, widths=(s_w * 0, p_w))
    bad = loc.copy()
    bad[0, 2, 2] = -50.0
    with pytest.raises(ValueError, match="not positive definite"):
        density_qeq(WATER, WATER_Z, lin, bad, basis=BASIS)
    bad = loc.copy()
    bad[0, 0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        density_qeq(WATER, WATER_Z, lin, bad, basis=BASIS)
    with pytest.raises(ValueError, match="every label"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, fragments=[0, 0, 2], fragment_charges=[0.0, 0.0])
    with pytest.raises(ValueError, match="every label"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, fragments=[0, 0, 1], fragment_charges=[0.0])
    with pytest.raises(ValueError, match="needs fragments"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, fragment_charges=[0.0])
    with pytest.raises(ValueError, match="agree"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, fragments=[0, 0, 1], fragment_charges=[1.0, 0.0],
                    total_charge=2.0)
    with pytest.raises(ValueError, match="fragment_charges"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, fragments=[0, 0, 1], total_charge=1.0)
    with pytest.raises(ValueError, match="shape"):
        density_qeq(WATER, WATER_Z, lin[:, :3], loc, basis=BASIS)
    with pytest.raises(ValueError, match="shape"):
        density_qeq(WATER, WATER_Z, lin, loc[:, :3], basis=BASIS)
    with pytest.raises(ValueError, match="shape"):
        density_qeq(WATER[:2], WATER_Z, lin, loc, basis=BASIS)
    with pytest.raises(ValueError, match="not in the basis"):
        density_qeq(WATER, np.array([8, 1, 6]), lin, loc, basis=BASIS)
    for name, kwargs in (("positions", {}), ("linear", {}), ("local", {}), ("field", {"field": np.zeros(3)})):
        args = {"positions": WATER.copy(), "linear": lin.copy(), "local": loc.copy()}
        if name == "field":
            kwargs = {"field": np.array([0.0, np.nan, 0.0])}
        else:
            args[name][(0,) * args[name].ndim] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            density_qeq(args["positions"], WATER_Z, args["linear"], args["local"], basis=BASIS, **kwargs)
    with pytest.raises(ValueError, match="open boundary only"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, cell=np.eye(3) * 8, field=np.zeros(3))
    with pytest.raises(ValueError, match="net charge"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, cell=np.eye(3) * 8, total_charge=1.0)
    with pytest.raises(ValueError, match="pcg"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, cell=np.eye(3) * 8, method="pme", solver="dense")
    with pytest.raises(ValueError, match="method"):
        density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS, method="p3m")
    with pytest.raises(ValueError, match="exactly one"):
        project_density(WATER, WATER_Z, basis=BASIS)
    with pytest.raises(ValueError, match="shape"):
        project_density(WATER, WATER_Z, basis=BASIS, rhs=np.zeros((3, nb + 1)))
    # inputs are never mutated
    lin0, loc0 = lin.copy(), loc.copy()
    density_qeq(WATER, WATER_Z, lin, loc, basis=BASIS)
    np.testing.assert_array_equal(lin, lin0)
    np.testing.assert_array_equal(loc, loc0)
