"""Derivatives of the Coulomb energy: forces and stress against finite differences,
``jax.test_util.check_grads`` (first and second order), Hessian-vector products and ∂F/∂q,
potentials = ∂E/∂q and the scaling (virial) identity, and ``jax.grad`` through the eager
front door ``jaxlr.coulomb``.

The derivatives of the *discrete* energy are checked (fixed, cheap parameters: see
``coulomb_helpers.deriv_system``), so the parameters need not be accurate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_cluster
from coulomb_helpers import METHODS3, deriv_system, invariance_system, terms_fn
from jax.test_util import check_grads

import jaxlr
from jaxlr.tuning._coulomb import force_scale


def deriv_energy(method):
    """E(positions, charges, sigma, smearing, cell) (direct: E(positions, charges, sigma))."""
    d = deriv_system(method)
    if method == "direct":
        def f(pos, q, sig):
            return jaxlr.coulomb_energy(pos, q, sigma=sig, method="direct")
        return f, (d["pos"], d["q"], d["sigma"])

    def f(pos, q, sig, s, cell):
        return jaxlr.coulomb_energy(pos, q, cell=cell, sigma=sig, smearing=s, neighbors=d["nbrs"],
                                    kvectors=d["kvec"], method=method, mesh=d["mesh"])
    return f, (d["pos"], d["q"], d["sigma"], d["smearing"], d["cell"])


def five_point(fn, x, direction, h):
    """Central 5-point derivative of fn along direction at x (error O(h⁴))."""
    return (-fn(x + 2 * h * direction) + 8 * fn(x + h * direction) - 8 * fn(x - h * direction)
            + fn(x - 2 * h * direction)) / (12 * h)


# ======================================================================================
# forces, stress, check_grads, second derivatives, potentials and virial
# ======================================================================================
@pytest.mark.parametrize("method", METHODS3)
def test_forces_and_stress_finite_differences(method):
    """Forces = −∂E/∂R and stress = (1/V) ∂E/∂ε against 5-point finite differences.

    h = 1e-3 Å (strain 1e-3): truncation O(h⁴ E⁽⁵⁾) ≈ 1e-11, round-off ≈ 1e-16 |E|/h ≈ 1e-12,
    so the bound 1e-8 F₀ (stress: 1e-8 F₀/Å²) is comfortable.
    """
    d = deriv_system(method)
    f, args = deriv_energy(method)
    e_fn = jax.jit(f)
    energy, phi, forces, stress = terms_fn(method, d["mesh"])(d["pos"], d["q"], d["cell"], d["sigma"],
                                                             d["smearing"], d["nbrs"], d["kvec"])
    cell_np = None if d["cell"] is None else np.asarray(d["cell"])
    f0 = force_scale(np.asarray(d["pos"]), np.asarray(d["q"]), cell_np)
    pos = d["pos"]
    fd = np.zeros(pos.shape)
    for i in range(pos.shape[0]):
        for a in range(3):
            e = jnp.zeros_like(pos).at[i, a].set(1.0)
            fd[i, a] = -five_point(lambda x: float(e_fn(x, *args[1:])), pos, e, 1e-3)
    assert np.max(np.abs(np.asarray(forces) - fd)) <= 1e-8 * f0
    if method == "direct":
        assert stress is None
        return
    cell = d["cell"]
    volume = abs(float(jnp.linalg.det(cell)))
    for a in range(3):
        for b in range(a, 3):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5
            eps[b, a] += 0.5
            eps = jnp.asarray(eps)

            def strained(t):
                deform = jnp.eye(3) + t * eps
                return float(e_fn(pos @ deform.T, args[1], args[2], args[3], cell @ deform.T))
            fd_s = five_point(strained, 0.0, 1.0, 1e-3) / volume
            assert abs(float(stress[a, b]) - fd_s) <= 1e-8 * f0
            assert abs(float(stress[b, a]) - fd_s) <= 1e-8 * f0


@pytest.mark.parametrize("method", ["ewald", pytest.param("pme", marks=pytest.mark.slow)])
def test_check_grads_first_order(method):
    """jax.test_util.check_grads, order 1, forward and reverse, w.r.t. every traced input
    (direct: covered by the order-2 check, which includes order 1)."""
    f, args = deriv_energy(method)
    check_grads(jax.jit(f), args, order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("method", [
    pytest.param("direct", marks=pytest.mark.slow),  # ~10 s; second derivatives stay in the default run
    pytest.param("ewald", marks=pytest.mark.slow),   # ~20 s of compilation
    pytest.param("pme", marks=pytest.mark.slow),     # ~35 s of compilation
])
def test_check_grads_second_order(method):
    """check_grads order 2 (fwd-over-fwd, fwd-over-rev, rev-over-fwd, rev-over-rev).

    Ewald and PME are ``slow``; their second derivatives are also covered in the fast
    set by :func:`test_second_derivatives_finite_differences`.
    """
    f, args = deriv_energy(method)
    check_grads(jax.jit(f), args, order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("method", ["direct", "ewald", pytest.param("pme", marks=pytest.mark.slow)])
def test_second_derivatives_finite_differences(method):
    """Hessian-vector products (forward over reverse) w.r.t. positions and ∂F/∂q (reverse
    over reverse, what training on forces needs) against 5-point differences of forces."""
    d = deriv_system(method)
    f, args = deriv_energy(method)
    rest = args[1:]
    grad_r = jax.jit(jax.grad(f))
    rng = np.random.default_rng(7)
    v = jnp.asarray(rng.normal(size=d["pos"].shape))
    hvp = jax.jit(lambda r, v: jax.jvp(lambda x: jax.grad(f)(x, *rest), (r,), (v,))[1])(d["pos"], v)
    fd = five_point(lambda x: np.asarray(grad_r(x, *rest)), d["pos"], v, 1e-3)
    scale = float(np.max(np.abs(fd)))
    assert np.max(np.abs(np.asarray(hvp) - fd)) <= 1e-7 * scale

    def forces_of_q(q):
        return -jax.grad(f)(d["pos"], q, *args[2:])
    dfdq = np.asarray(jax.jit(jax.jacrev(forces_of_q))(d["q"]))  # (N, 3, N)
    forces_q = jax.jit(forces_of_q)
    n = d["q"].shape[0]
    for j in range(n):
        e = jnp.zeros(n).at[j].set(1.0)
        col = five_point(lambda x: np.asarray(forces_q(x)), d["q"], e, 1e-3)
        assert np.max(np.abs(dfdq[:, :, j] - col)) <= 1e-7 * np.max(np.abs(dfdq))


@pytest.mark.parametrize("method", METHODS3)
def test_potentials_and_virial(method):
    """potentials = ∂E/∂q, E = ½ Σ q φ, and the scaling (virial) identity.

    The energy — including the discrete Ewald/PME approximations with fixed neighbour
    pairs, integer k-vectors and a fixed mesh in fractional coordinates — is homogeneous of
    degree −1 under scaling all lengths (R, cell, σ, s), so
    tr(σ) V + Σ_i σ_i ∂E/∂σ_i + s ∂E/∂s = −E exactly: a joint check of the stress, width
    and smearing derivatives.
    """
    d = deriv_system(method)
    f, args = deriv_energy(method)
    energy, phi, _, stress = terms_fn(method, d["mesh"])(d["pos"], d["q"], d["cell"], d["sigma"],
                                                         d["smearing"], d["nbrs"], d["kvec"])
    grads = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
    np.testing.assert_allclose(phi, grads[1], rtol=1e-12, atol=1e-12 * float(np.max(np.abs(phi))))
    assert abs(0.5 * float(jnp.dot(d["q"], phi)) - float(energy)) <= 1e-12 * abs(float(energy)) + 1e-12
    scaling = float(jnp.dot(d["sigma"], grads[2]))
    if method != "direct":
        volume = abs(float(jnp.linalg.det(d["cell"])))
        scaling += float(jnp.trace(stress)) * volume + float(d["smearing"] * grads[3])
    else:
        scaling += float(jnp.sum(d["pos"] * grads[0]))  # open boundary: Σ R·∂E/∂R is the virial
    assert abs(scaling + float(energy)) <= 1e-10 * max(1.0, abs(float(energy)))


# ======================================================================================
# gradients through the eager front door
# ======================================================================================
def test_front_door_gradients():
    """jax.grad through the eager front door (README example): w.r.t. σ against finite
    differences, w.r.t. charges equal to the potentials (open boundary and PME)."""
    pos, q, sig = random_cluster(91, 8, gaussian=True)
    g = jax.grad(lambda s_: jaxlr.coulomb(pos, q, sigma=s_).energy)(jnp.asarray(sig))
    e = lambda s_: float(jaxlr.coulomb(pos, q, sigma=s_).energy)  # noqa: E731
    for i in range(len(sig)):
        d = np.zeros(len(sig))
        d[i] = 1.0
        assert abs(float(g[i]) - five_point(e, sig, d, 1e-3)) <= 1e-8 * float(np.max(np.abs(g)))
    gq = jax.grad(lambda q_: jaxlr.coulomb(pos, q_, sigma=sig).energy)(jnp.asarray(q))
    np.testing.assert_allclose(gq, jaxlr.coulomb(pos, q, sigma=sig).potentials, rtol=1e-12, atol=1e-12)

    pos, q, cell = invariance_system()
    res = jaxlr.coulomb(pos, q, cell=cell, method="pme", accuracy=1e-5)
    gq = jax.grad(lambda q_: jaxlr.coulomb(pos, q_, cell=cell, method="pme", accuracy=1e-5).energy)(jnp.asarray(q))
    np.testing.assert_allclose(gq, res.potentials, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(gq))))
