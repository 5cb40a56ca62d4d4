"""Smooth PME internals: B-spline weights, alias sums, influence functions, convergence of
the mesh part to the Ewald sum, spline orders and FFT-friendly non-power-of-two meshes.

Reference: ``reference.ewald_energy`` for a random triclinic cell of 48 point charges;
real space converged (cutoff 8.5 Å = √2·6 s at smearing s = 1 Å), so every difference
is the mesh error.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from conftest import random_system, rms

import jaxlr
from jaxlr import performance
from jaxlr.electrostatics._pme import spread_charges
from jaxlr.electrostatics._splines import alias_sum_u, alias_sum_u2, bspline_values, bspline_weights
from jaxlr.tuning._coulomb import force_scale


def cardinal_bspline(x, p):
    """M_p(x) from the explicit truncated-power formula (independent of jaxlr's recursion):
    M_p(x) = 1/(p−1)! Σ_{k=0}^{p} (−1)^k C(p, k) (x − k)_+^{p−1}.

    The alternating sum cancels badly at high order, so it is evaluated in exact rational
    arithmetic (every float is a rational) and rounded once.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = []
    for xv in x.ravel():
        xf = Fraction(float(xv))
        total = sum((-1) ** k * math.comb(p, k) * (xf - k) ** (p - 1) for k in range(p + 1) if xf > k)
        flat.append(float(total / math.factorial(p - 1)))
    return np.array(flat).reshape(x.shape)


ORDERS = (2, 3, 4, 5, 6, 7, 8, 10, 12)


@pytest.mark.parametrize("order", ORDERS)
def test_bspline_weights(order):
    """Weights sum to 1 (partition of unity), derivative weights sum to 0, and both equal the
    explicit formula (derivative: 5-point difference of it) at w[j] = M_p(t + j)."""
    t = np.concatenate([np.linspace(0.0, 1.0, 41, endpoint=False), [1e-12, 0.5, 1 - 1e-12]])
    w, dw = bspline_weights(jnp.asarray(t), order)
    w, dw = np.asarray(w), np.asarray(dw)
    assert w.shape == dw.shape == (len(t), order)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(dw.sum(axis=1), 0.0, rtol=0, atol=1e-13)
    assert np.all(w >= -1e-15)
    x = t[:, None] + np.arange(order)[None, :]
    np.testing.assert_allclose(w, cardinal_bspline(x, order), rtol=0, atol=1e-13)
    if order > 2:  # M_2 is not differentiable at the integers; the others are C^(p-2)
        h = 1e-3
        fd = (-cardinal_bspline(x + 2 * h, order) + 8 * cardinal_bspline(x + h, order)
              - 8 * cardinal_bspline(x - h, order) + cardinal_bspline(x - 2 * h, order)) / (12 * h)
        inner = (t > 3e-3) & (t < 1 - 3e-3)  # stay away from the knots for the finite difference
        np.testing.assert_allclose(dw[inner], fd[inner], rtol=0, atol=1e-9)
    # float32 weights keep the partition of unity to float32 precision, and each weight is
    # within a few ulps of the exact value at the float32 offset
    t32 = np.asarray(jnp.asarray(t, dtype=jnp.float32), np.float64)
    w32, dw32 = bspline_weights(jnp.asarray(t, dtype=jnp.float32), order)
    assert w32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(w32).sum(axis=1), 1.0, atol=1e-6)
    exact32 = cardinal_bspline(t32[:, None] + np.arange(order)[None, :], order)
    np.testing.assert_allclose(np.asarray(w32, np.float64), exact32, rtol=0, atol=5e-8)
    # axis places the p weights elsewhere (the interpolation builds them atoms-last)
    t2 = jnp.asarray(t).reshape(4, -1)
    wa, dwa = bspline_weights(t2, order, axis=1)
    assert wa.shape == (4, order, t2.shape[1])
    np.testing.assert_array_equal(np.moveaxis(np.asarray(wa), 1, -1), w.reshape(4, -1, order))
    np.testing.assert_array_equal(np.moveaxis(np.asarray(dwa), 1, -1), dw.reshape(4, -1, order))


@pytest.mark.parametrize("order", [0, -3, 2.5, True, "4"])
def test_bspline_weights_bad_order_raises(order):
    with pytest.raises(ValueError, match="B-spline order"):
        bspline_weights(jnp.asarray([0.3]), order)


def test_bspline_weights_order_one():
    """Order 1 (the box function, used for derivative weights of low orders): weight 1, slope 0."""
    w, dw = bspline_weights(jnp.asarray([0.0, 0.3, 0.999]), 1)
    np.testing.assert_array_equal(np.asarray(w), 1.0)
    np.testing.assert_array_equal(np.asarray(dw), 0.0)


@pytest.mark.parametrize("order", (4, 6, 8))
def test_bspline_values_and_alias_sums(order):
    """Integer values of M_p, and the closed-form alias sums Σ_a Û(m/K + a) and
    Σ_a Û²(m/K + a) (Û(ξ) = sinc(ξ)^p) against brute-force sums over 4001 aliases."""
    np.testing.assert_allclose(bspline_values(order), cardinal_bspline(np.arange(order + 1.0), order),
                               rtol=0, atol=1e-15)
    if order == 4:
        np.testing.assert_allclose(bspline_values(4), [0, 1 / 6, 2 / 3, 1 / 6, 0], atol=1e-16)
    k_mesh = 15
    m = np.fft.fftfreq(k_mesh, 1.0 / k_mesh)
    a = np.arange(-2000, 2001)[:, None]
    xi = m[None, :] / k_mesh + a
    sinc = np.sinc(xi)  # sin(πξ)/(πξ)
    np.testing.assert_allclose(alias_sum_u(m, k_mesh, order), np.sum(sinc**order, axis=0), rtol=1e-10)
    np.testing.assert_allclose(alias_sum_u2(m, k_mesh, order), np.sum(sinc ** (2 * order), axis=0), rtol=1e-12)


def test_bspline_values_against_scipy_up_to_high_order():
    """M_p at the integers against scipy's B-spline on the knots 0 … p (de Boor's algorithm,
    independent code), orders 2 … 16 and the high orders needed by the alias sum Σ Û² of
    order-12 splines (M_24) and beyond; exponential-time recursion would hang here."""
    from scipy.interpolate import BSpline

    for order in list(range(2, 17)) + [24, 32]:
        knots = np.arange(order + 1.0)
        ref = np.nan_to_num(BSpline.basis_element(knots, extrapolate=False)(knots))   # NaN outside
        vals = np.asarray(bspline_values(order))
        assert vals.shape == (order + 1,)
        np.testing.assert_allclose(vals, ref, rtol=0, atol=2e-16)
        assert abs(vals.sum() - 1.0) < 1e-15                      # partition of unity
        np.testing.assert_array_equal(vals, vals[::-1])          # symmetric about p/2
    with pytest.raises(ValueError):
        bspline_values(0)


def test_spread_charges_conserves_charge():
    rng = np.random.default_rng(0)
    frac = rng.uniform(-1.5, 2.5, (30, 3))  # any real fractional coordinates
    q = rng.normal(size=30)
    for spec in (jaxlr.MeshSpec((8, 9, 10), order=4), jaxlr.MeshSpec((15, 12, 7), order=6)):
        mesh = spread_charges(jnp.asarray(frac), jnp.asarray(q), spec)
        assert mesh.shape == spec.shape
        assert float(jnp.sum(mesh)) == pytest.approx(q.sum(), abs=1e-12)
        # a lattice translation of the fractional coordinates changes nothing
        shifted = spread_charges(jnp.asarray(frac + rng.integers(-3, 4, frac.shape)), jnp.asarray(q), spec)
        np.testing.assert_allclose(shifted, mesh, rtol=0, atol=1e-12)


@pytest.mark.parametrize("influence", ["spme", "optimal"])
def test_influence_function_properties(influence):
    _, _, cell, _ = random_system(1, 10, triclinic=True)
    spec = jaxlr.MeshSpec((12, 15, 10), order=6, influence=influence)
    g = np.asarray(jaxlr.electrostatics.influence_function(jnp.asarray(cell), 1.0, spec))
    assert g.shape == (12, 15, 6)
    assert g[0, 0, 0] == 0.0  # tin-foil: no k = 0 term
    assert np.all(g.ravel()[1:] > 0)  # positive everywhere else


def test_mesh_spec_validation():
    for bad in (jaxlr.MeshSpec((12, 12, 12), order=9), jaxlr.MeshSpec((12, 12, 12), order=1),
                jaxlr.MeshSpec((12, 12, 12), order=5, influence="spme"),
                jaxlr.MeshSpec((12, 5, 12), order=6), jaxlr.MeshSpec((12, 12, 12), influence="lagrange")):
        with pytest.raises(ValueError):
            jaxlr.electrostatics.make_reciprocal_energy(bad)


# ======================================================================================
# convergence to Ewald
# ======================================================================================
SMEARING = 1.0


@functools.lru_cache(maxsize=None)
def pme_system():
    pos, q, cell, _ = random_system(101, 48, triclinic=True)
    energy, _, forces, _ = ref.ewald_energy(pos, q, cell)
    nbrs = jaxlr.neighbor_list(pos, math.sqrt(2) * 6 * SMEARING, cell)
    return dict(pos=jnp.asarray(pos), q=jnp.asarray(q), cell=jnp.asarray(cell), nbrs=nbrs, energy=energy,
                forces=forces, f0=force_scale(pos, q, cell))


@functools.lru_cache(maxsize=None)
def pme_errors(spec):
    """(relative energy error, RMS force error / F₀) of PME with this mesh (cached)."""
    s = pme_system()

    def energy(r):
        return jaxlr.coulomb_energy(r, s["q"], cell=s["cell"], smearing=SMEARING, neighbors=s["nbrs"],
                                    method="pme", mesh=spec)
    e, g = jax.jit(jax.value_and_grad(energy))(s["pos"])
    return abs(float(e) - s["energy"]) / abs(s["energy"]), rms(-np.asarray(g) - s["forces"]) / s["f0"]


MESHES = (15, 21, 27)  # FFT-friendly, not powers of two (3·5, 3·7, 3³)


@pytest.mark.parametrize("influence", ["spme", "optimal"])
def test_convergence_to_ewald(influence):
    """Both influence functions converge to the Ewald sum on 15³, 21³, 27³ meshes (order 6,
    triclinic cell, spacing 0.64 → 0.36 Å for s = 1 Å).  Force errors fall monotonically and
    reach ≤ 1e-5 F₀ (measured 3.3e-6); energy errors ≤ 3e-6 relative on 27³ (measured
    spme 1.2e-6, optimal 1.7e-7)."""
    errs = [pme_errors(jaxlr.MeshSpec((k, k, k), order=6, influence=influence)) for k in MESHES]
    forces = [f for _, f in errs]
    assert forces[0] > forces[1] > forces[2]
    assert forces[2] <= 1e-5
    assert errs[2][0] <= 3e-6
    assert forces[0] >= 10 * forces[2]  # the test resolves the convergence


def test_optimal_not_worse_than_spme():
    """At the same mesh and order the (energy-)optimal influence function has a smaller
    energy error than SPME's (measured 7–50× smaller; asserted ≥ 2×), and a force error no
    larger than SPME's up to 5 % (they agree to ~1 %: for forces both are dominated by the
    same interpolation error).  Order 6 on every mesh of the convergence test, order 4 on 15³."""
    for order, meshes in ((6, MESHES), (4, MESHES[:1])):
        for k in meshes:
            e_opt, f_opt = pme_errors(jaxlr.MeshSpec((k, k, k), order=order, influence="optimal"))
            e_spme, f_spme = pme_errors(jaxlr.MeshSpec((k, k, k), order=order, influence="spme"))
            assert e_opt <= 0.5 * e_spme
            assert f_opt <= 1.05 * f_spme


@pytest.mark.parametrize("k", [21, pytest.param(24, marks=pytest.mark.slow)])
def test_higher_order_is_more_accurate(k):
    """The force error falls by > 3× at every step of the spline order 3 → 8, odd orders
    included, on an odd mesh and on an even one (whose Nyquist plane is where an odd-order
    SPME b-factor would vanish; the optimal influence function has no such zero).
    Measured 21³: 2.2e-3, 4.7e-4, 5.5e-5, 1.4e-5, 2.8e-6, 7.7e-7; 24³: 1.8e-3, 3.2e-4,
    2.8e-5, 6.1e-6, 9.3e-7, 2.3e-7."""
    errs = [pme_errors(jaxlr.MeshSpec((k, k, k), order=p))[1] for p in (3, 4, 5, 6, 7, 8)]
    assert all(a > 3 * b for a, b in zip(errs, errs[1:]))


def test_anisotropic_non_power_of_two_mesh():
    """A mixed mesh (20, 15, 21) — even and odd sizes, the odd one on the rfft axis — is
    at least as accurate as the uniform 15³ mesh it refines, and aliases=1 in the optimal
    influence function changes the force error by less than 1 %."""
    e_mixed, f_mixed = pme_errors(jaxlr.MeshSpec((20, 15, 21), order=6))
    e_15, f_15 = pme_errors(jaxlr.MeshSpec((15, 15, 15), order=6))
    assert f_mixed <= f_15
    _, f_alias = pme_errors(jaxlr.MeshSpec((15, 15, 15), order=6, aliases=1))
    assert abs(f_alias - f_15) <= 0.01 * f_15


def test_blocked_spread_and_interpolation_equal_one_block(monkeypatch):
    """Large systems are spread and interpolated block by block (each block's atoms
    gathered, the last block zero-padded, the interpolation's B-spline weights computed
    per block).  With blocks of 64 atoms over 300 (five blocks, the last one padded) the
    energy, forces, potentials and a second derivative
    (gradient of Σ|F|², as in training on forces) equal the one-block result."""
    pme = importlib.import_module("jaxlr.electrostatics._pme")
    pos, q, cell, _ = random_system(29, 300, triclinic=True)
    r, qq, c = jnp.asarray(pos), jnp.asarray(q), jnp.asarray(cell)
    spec = jaxlr.MeshSpec((20, 21, 22), 5)

    def outputs():
        def energy(r, q):
            return pme.pme_reciprocal_energy(r, q, c, 1.2, spec)

        def loss(r, q):
            return jnp.sum(jax.grad(energy)(r, q) ** 2)

        e, (g_r, g_q) = jax.jit(jax.value_and_grad(energy, argnums=(0, 1)))(r, qq)
        return e, g_r, g_q, jax.jit(jax.grad(loss, argnums=(0, 1)))(r, qq)

    single = outputs()
    monkeypatch.setitem(performance.TABLES, "cpu", dataclasses.replace(
        performance.CPU, spread_block_points=64 * 5**3, interp_block_points=64 * 5**3))
    blocked = outputs()
    for a, b in zip(jax.tree_util.tree_leaves(blocked), jax.tree_util.tree_leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(b))))


@pytest.mark.parametrize("influence, aliases, order", [
    ("optimal", 0, 6), ("spme", 0, 6),
    pytest.param("optimal", 1, 5, marks=pytest.mark.slow),  # 27 shells: 50 s to compile
])
def test_cell_and_smearing_slopes_equal_plain_autodiff(influence, aliases, order):
    """The reciprocal energy's rule takes its cell and smearing derivatives from scalar
    slopes of the influence function (the metric's second moments of ½|Q̂|² ∂G/∂k², and
    Σ ½|Q̂|² ∂G/∂s).  They equal plain reverse-mode autodiff of ½ Σ G|Q̂|², and so do the
    second derivatives JAX takes through the rule (∂²E/∂cell∂s, a cell Hessian-vector
    product), for a triclinic cell, one or three alias shells per axis and both
    influence functions."""
    pme = importlib.import_module("jaxlr.electrostatics._pme")
    pos, q, cell, _ = random_system(31, 40, triclinic=True)
    spec = jaxlr.MeshSpec((16, 18, 20), order, influence=influence, aliases=aliases)
    frac = jnp.asarray(pos) @ jnp.linalg.inv(jnp.asarray(cell))
    args = (frac, jnp.asarray(q), jnp.asarray(cell), 1.3)
    with_rule = pme.make_reciprocal_energy(spec)
    weights = jnp.asarray(pme._host_tables(spec)[3])

    def plain(frac, q, cell, s):
        qh = jnp.fft.rfftn(spread_charges(frac, q, spec))
        return 0.5 * jnp.sum(pme.influence_function(cell, s, spec) * weights * jnp.abs(qh) ** 2)

    def close(a, b):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-11 * float(np.max(np.abs(y))))

    close(jax.jit(jax.grad(with_rule, argnums=(0, 1, 2, 3)))(*args), jax.jit(jax.grad(plain, argnums=(0, 1, 2, 3)))(*args))
    close(jax.jit(jax.jacfwd(jax.grad(with_rule, argnums=2), argnums=3))(*args),
          jax.jit(jax.jacfwd(jax.grad(plain, argnums=2), argnums=3))(*args))
    v = jnp.asarray(np.random.default_rng(3).normal(size=(3, 3)))

    @functools.partial(jax.jit, static_argnums=0)
    def cell_hvp(f):
        return jax.jvp(lambda c: jax.grad(f, argnums=2)(args[0], args[1], c, args[3]), (args[2],), (v,))[1]

    close(cell_hvp(with_rule), cell_hvp(plain))
