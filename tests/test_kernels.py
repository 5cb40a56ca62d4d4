"""The shared-exponential erfc of the Ewald real-space kernel, against mpmath."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import jax
import jax.numpy as jnp

from jaxlr.kernels import erfc_exp, pair_kernel, pair_kernel_dr

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
