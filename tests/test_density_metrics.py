"""Coulomb metric and electrostatic potential of s + p Gaussian densities, against closed forms.

References are written here in numpy/scipy, independently of jaxlr's kernels: two unit s
Gaussians of widths a, b at distance d interact with ``KE erf(d/√(2(a²+b²)))/d``; a p
function is the derivative of an s function with respect to its centre, so every p entry
is checked by central differences of that closed form.
"""

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np
import pytest
from scipy.special import erf

from jaxlr.electrostatics import coulomb_metric, density_esp, density_overlap, multipole_energy
from jaxlr.system import merz_kollman_points
from jaxlr.units import KE

H = 1e-4


def _ss(ra, rb, a, b):
    d = np.linalg.norm(np.asarray(rb) - np.asarray(ra))
    g = np.sqrt(a * a + b * b)
    if d < 1e-12:
        return KE * np.sqrt(2 / np.pi) / g
    return KE * erf(d / (np.sqrt(2) * g)) / d


def _expand(positions, coefficients, n_s, sigma_s, sigma_p):
    """A density as a list of point-like terms (centre, width, charge, dipole or None)."""
    terms = []
    for i, r in enumerate(positions):
        for k in range(n_s):
            terms.append((r, sigma_s[i, k], coefficients[i, k], None))
        for k in range(sigma_p.shape[1]):
            terms.append((r, sigma_p[i, k], 0.0, coefficients[i, n_s + 3 * k: n_s + 3 * k + 3]))
    return terms


def _pair(t1, t2):
    """(t1 | t2) by the closed form and central differences in the centres (p = ∂g/∂R)."""
    (r1, w1, q1, m1), (r2, w2, q2, m2) = t1, t2
    total = q1 * q2 * _ss(r1, r2, w1, w2)
    e = np.eye(3)
    if m2 is not None:       # s(1)–p(2): Σ_β μ_β ∂/∂R2β
        total += q1 * sum(m2[b] * (_ss(r1, r2 + H * e[b], w1, w2) - _ss(r1, r2 - H * e[b], w1, w2)) / (2 * H)
                          for b in range(3))
    if m1 is not None:
        total += q2 * sum(m1[a] * (_ss(r1 + H * e[a], r2, w1, w2) - _ss(r1 - H * e[a], r2, w1, w2)) / (2 * H)
                          for a in range(3))
    if m1 is not None and m2 is not None:
        for a in range(3):
            for b in range(3):
                f = lambda sa, sb: _ss(r1 + sa * H * e[a], r2 + sb * H * e[b], w1, w2)
                total += m1[a] * m2[b] * (f(1, 1) - f(1, -1) - f(-1, 1) + f(-1, -1)) / (4 * H * H)
    return total


def _overlap_reference(pos, ca, ssa, spa, cb, ssb, spb):
    ta = _expand(pos, ca, ssa.shape[1], ssa, spa)
    tb = _expand(pos, cb, ssb.shape[1], ssb, spb)
    return sum(_pair(x, y) for x in ta for y in tb)


@pytest.fixture(scope="module")
def two_bases():
    rng = np.random.default_rng(3)
    pos = rng.uniform(-1.5, 1.5, (4, 3))
    ssa, spa = rng.uniform(0.3, 0.9, (4, 2)), rng.uniform(0.4, 0.9, (4, 1))
    ssb, spb = rng.uniform(0.2, 0.7, (4, 3)), rng.uniform(0.3, 0.8, (4, 2))
    ca = rng.normal(size=(4, 2 + 3))
    cb = rng.normal(size=(4, 3 + 6))
    return pos, ca, ssa, spa, cb, ssb, spb


def test_overlap_against_closed_form_with_p_functions(two_bases):
    pos, ca, ssa, spa, cb, ssb, spb = two_bases
    got = float(density_overlap(pos, ca, ssa, spa, cb, ssb, spb))
    ref = _overlap_reference(pos, ca, ssa, spa, cb, ssb, spb)
    assert got == pytest.approx(ref, rel=1e-6)


def test_metric_is_half_the_energy_of_the_difference(two_bases):
    pos, ca, ssa, spa, cb, ssb, spb = two_bases
    got = float(coulomb_metric(pos, ca, ssa, spa, cb, ssb, spb))
    ref = 0.5 * (_overlap_reference(pos, ca, ssa, spa, ca, ssa, spa) - 2 * _overlap_reference(pos, ca, ssa, spa, cb, ssb, spb)
                 + _overlap_reference(pos, cb, ssb, spb, cb, ssb, spb))
    assert ref > 0 and got == pytest.approx(ref, rel=1e-6)
    # one density against nothing is its own Coulomb energy ½ cᵀ C c
    zero = np.zeros_like(cb)
    assert float(coulomb_metric(pos, ca, ssa, spa, zero, ssb, spb)) == pytest.approx(
        float(multipole_energy(ca, pos, ssa, spa)), rel=1e-10)


def test_metric_vanishes_for_equal_densities_in_different_bases():
    """The same density written twice (a basis padded with a zero function) has zero distance;
    an error in a soft direction costs little, one that moves charge costs a lot."""
    pos = np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    c1 = np.array([[-0.8, 0.0, 0.0, 0.1], [0.4, 0.0, 0.0, 0.0], [0.4, 0.0, 0.0, 0.0]])
    s1, p1 = np.full((3, 1), 0.4), np.full((3, 1), 0.5)
    c2 = np.concatenate([c1[:, :1], np.zeros((3, 1)), c1[:, 1:]], axis=1)
    s2 = np.concatenate([s1, np.full((3, 1), 0.9)], axis=1)
    assert float(coulomb_metric(pos, c1, s1, p1, c2, s2, p1)) < 1e-12
    moved = c1.copy(); moved[0, 0] += 0.05; moved[1, 0] -= 0.05
    assert float(coulomb_metric(pos, c1, s1, p1, moved, s1, p1)) > 1e-3
    inactive = np.array([True, True, False])
    changed = c1.copy(); changed[2] = 7.0
    assert float(coulomb_metric(pos, c1, s1, p1, changed, s1, p1, active=inactive)) < 1e-12


def test_esp_against_closed_form(two_bases):
    pos, ca, ssa, spa, *_ = two_bases
    pts = np.array([[4.0, 0.3, -0.2], [-3.0, 2.5, 1.0], [0.1, 0.2, 0.3]])
    got = np.asarray(density_esp(pts, pos, ca, ssa, spa))
    terms = _expand(pos, ca, 2, ssa, spa)
    ref = [sum(_pair((x, 0.0, 1.0, None), t) for t in terms) for x in pts]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_esp_far_field_is_charge_plus_dipole():
    pos = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    c = np.array([[0.3, 0.1, -0.2, 0.05], [-0.1, 0.0, 0.0, 0.0]])
    ss, sp = np.full((2, 1), 0.5), np.full((2, 1), 0.6)
    x = np.array([[300.0, 200.0, -100.0]])
    q = c[:, 0].sum()
    mu = (c[:, :1] * pos).sum(axis=0) + c[0, 1:]
    r = np.linalg.norm(x[0])
    ref = KE * (q / r + mu @ x[0] / r ** 3)
    assert float(density_esp(x, pos, c, ss, sp)[0]) == pytest.approx(ref, rel=1e-4)


def test_merz_kollman_points_and_refusals():
    water = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
    pts = merz_kollman_points(water, [8, 1, 1], scales=(1.4,), density=2.0)
    d = np.linalg.norm(pts[:, None] - water[None], axis=-1)
    radii = np.array([1.4, 1.2, 1.2]) * 1.4
    assert np.all(d >= radii - 1e-9)
    # every point lies on some atom's sphere
    assert np.all(np.min(np.abs(d - radii), axis=1) < 1e-9)
    with pytest.raises(ValueError, match="radius"):
        merz_kollman_points(water, [8, 1, 17])
    with pytest.raises(ValueError, match="positive"):
        merz_kollman_points(water, [8, 1, 1], density=0.0)
    with pytest.raises(ValueError, match="entries"):
        merz_kollman_points(water, [8, 1])
