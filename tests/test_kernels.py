"""The shared-exponential erfc of the Ewald real-space kernel, against mpmath."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np

from jaxlr.electrostatics._kernels import erfc_exp, pair_kernel, pair_kernel_dr

mp.mp.dps = 30


def _reference(xs):
    return (np.array([float(mp.erfc(x)) for x in xs]),
            np.array([float(mp.exp(-mp.mpf(x) ** 2)) for x in xs]))


def test_erfc_exp_matches_mpmath_float64():
    xs = np.concatenate([np.linspace(0.0, 6.0, 1201), [1e-12, 0.05, 7.5, 9.0]])
    erfc_ref, exp_ref = _reference(xs)
    erfc, exp = (np.asarray(v) for v in erfc_exp(jnp.asarray(xs, jnp.float64)))
    assert np.max(np.abs(erfc / erfc_ref - 1.0)) < 2e-14
    assert np.max(np.abs(exp / exp_ref - 1.0)) < 2e-14
    # as accurate as the library erfc it replaces
    lib = np.asarray(jax.scipy.special.erfc(jnp.asarray(xs)))
    assert np.max(np.abs(erfc / erfc_ref - 1.0)) < 4 * np.max(np.abs(lib / erfc_ref - 1.0))


def test_erfc_exp_float32_and_underflow():
    xs = np.linspace(0.0, 4.0, 801)
    erfc_ref, _ = _reference(xs)
    erfc, _ = erfc_exp(jnp.asarray(xs, jnp.float32))
    assert erfc.dtype == jnp.float32
    assert np.max(np.abs(np.asarray(erfc, np.float64) / erfc_ref - 1.0)) < 3e-6
    # far beyond any cutoff both values underflow to exactly 0, never NaN
    for dtype in (jnp.float32, jnp.float64):
        big, e_big = erfc_exp(jnp.asarray([30.0, 1e3, 1e30], dtype))
        assert np.all(np.asarray(big) == 0.0) and np.all(np.asarray(e_big) == 0.0)


def test_erfc_exp_derivatives_are_exact():
    x = jnp.linspace(0.0, 5.0, 51)
    d_erfc = jax.vmap(jax.grad(lambda t: erfc_exp(t)[0]))(x)
    d_exp = jax.vmap(jax.grad(lambda t: erfc_exp(t)[1]))(x)
    np.testing.assert_allclose(d_erfc, -2.0 / math.sqrt(math.pi) * jnp.exp(-x * x), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(d_exp, -2.0 * x * jnp.exp(-x * x), rtol=1e-14, atol=1e-300)
    # second derivative, for training on forces
    dd = jax.vmap(jax.grad(jax.grad(lambda t: erfc_exp(t)[0])))(x)
    np.testing.assert_allclose(dd, 4.0 / math.sqrt(math.pi) * x * jnp.exp(-x * x), rtol=1e-13, atol=1e-300)


def test_ewald_kernel_and_slope_against_mpmath():
    s = 1.3
    r = np.linspace(0.3, 9.0, 300)
    k, dk = pair_kernel_dr(jnp.asarray(r), None, s)
    k_ref = np.array([float(mp.erfc(x / (math.sqrt(2) * s)) / x) for x in r])
    dk_ref = np.array([float(mp.diff(lambda t: mp.erfc(t / (mp.sqrt(2) * s)) / t, x)) for x in r])
    np.testing.assert_allclose(k, k_ref, rtol=2e-14)
    np.testing.assert_allclose(dk, dk_ref, rtol=2e-13)
    np.testing.assert_allclose(pair_kernel(jnp.asarray(r), None, s), k, rtol=1e-15)
    # Gaussian charges: the erfc-difference form beyond r = √2 s
    g = 0.7
    kg, dkg = pair_kernel_dr(jnp.asarray(r), jnp.full_like(jnp.asarray(r), g), s)
    kg_ref = np.array([float((mp.erf(x / (mp.sqrt(2) * g)) - mp.erf(x / (mp.sqrt(2) * s))) / x) for x in r])
    dkg_ref = np.array([float(mp.diff(lambda t: (mp.erf(t / (mp.sqrt(2) * g)) - mp.erf(t / (mp.sqrt(2) * s))) / t, x))
                        for x in r])
    np.testing.assert_allclose(kg, kg_ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(dkg, dkg_ref, rtol=1e-11, atol=1e-300)


def _erf_over_r_reference(r, w):
    """erf(r/√2w)/r and its r-derivative in 40-digit arithmetic (limits at r = 0)."""
    with mp.workdps(40):
        c = mp.sqrt(2 / mp.pi) / w
        if r == 0:
            return c, mp.mpf(0)
        r = mp.mpf(r)
        value = mp.erf(r / (mp.sqrt(2) * w)) / r
        return value, (c * mp.exp(-r * r / (2 * w * w)) - value) / r


def test_gaussian_kernels_against_mpmath_near_zero_and_far():
    """Open-boundary and Ewald Gaussian kernels and slopes from r = 0 to the far field.

    The grid crosses the series/erfc switch (x = r/√2w = 0.5) of both widths from either
    side, and the near/far switch of the Ewald form.
    """
    g, s = 0.7, 1.3
    edges = [0.5 * math.sqrt(2.0) * w * f for w in (g, s) for f in (1 - 1e-12, 1.0, 1 + 1e-12)]
    r = np.unique(np.concatenate([[0.0, 1e-9, 1e-5, 1e-3, 0.02], edges, np.linspace(0.0, 9.0, 451)]))
    ref = {w: [_erf_over_r_reference(x, w) for x in r] for w in (g, s)}
    k_open = np.array([float(v) for v, _ in ref[g]])
    d_open = np.array([float(d) for _, d in ref[g]])
    k_ewald = np.array([float(a[0] - b[0]) for a, b in zip(ref[g], ref[s])])
    d_ewald = np.array([float(a[1] - b[1]) for a, b in zip(ref[g], ref[s])])
    rr, gg = jnp.asarray(r), jnp.full(r.shape, g)
    k, dk = pair_kernel_dr(rr, gg, None)
    np.testing.assert_allclose(k, k_open, rtol=1e-14)
    np.testing.assert_allclose(dk, d_open, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pair_kernel(rr, gg, None), k, rtol=1e-15)
    k, dk = pair_kernel_dr(rr, gg, s)
    # far out the Ewald kernel is tiny: relative accuracy there is the erfc-difference form's
    np.testing.assert_allclose(k, k_ewald, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(dk, d_ewald, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(pair_kernel(rr, gg, s), k, rtol=1e-15)
    # float32: a few ulps of the largest value everywhere
    for smear, k_ref, d_ref in ((None, k_open, d_open), (s, k_ewald, d_ewald)):
        k32, dk32 = pair_kernel_dr(jnp.asarray(r, jnp.float32), jnp.full(r.shape, g, jnp.float32), smear)
        assert k32.dtype == jnp.float32
        assert np.max(np.abs(np.asarray(k32, np.float64) - k_ref)) < 3e-6 * np.max(np.abs(k_ref))
        assert np.max(np.abs(np.asarray(dk32, np.float64) - d_ref)) < 3e-6 * np.max(np.abs(d_ref))


def test_gaussian_kernel_second_derivatives_are_finite_at_zero():
    """Gradients through the series branch at r = 0 (coincident Gaussians) stay finite and exact."""
    g = jnp.asarray(0.8)
    d2 = jax.grad(jax.grad(lambda r: pair_kernel(r, g, None)))(jnp.asarray(0.0))
    # erf(x)/r = (C/g)(1 − x²/3 + …), x = r/√2g: second derivative −(C/g)/(3 g²) at 0
    np.testing.assert_allclose(d2, -math.sqrt(2 / math.pi) / 0.8 / (3 * 0.8**2), rtol=1e-14)
    dsig = jax.grad(lambda w: pair_kernel(jnp.asarray(0.0), w, 1.5))(g)
    np.testing.assert_allclose(dsig, -math.sqrt(2 / math.pi) / 0.8**2, rtol=1e-14)
