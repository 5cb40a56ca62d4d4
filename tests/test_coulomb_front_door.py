"""The front door ``jaxlr.coulomb`` as a user meets it: the open boundary (direct sum)
against independent references, float32 inputs within their budgets, and bad input
rejected before anything compiles (inputs never modified).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from conftest import KE, random_cluster, random_system, rms
from coulomb_helpers import METHODS3, SQRT2, coulomb_module, max_rel, reference_system

import jaxlr
from jaxlr.tuning._coulomb import force_scale


# ======================================================================================
# 1. open boundary
# ======================================================================================
@pytest.mark.parametrize("gaussian", [False, True], ids=["point", "gaussian"])
def test_direct_matches_reference(gaussian):
    pos, q, sig = random_cluster(21, 40, gaussian=gaussian)
    e_ref, phi_ref, f_ref = ref.direct_energy(pos, q, sig)
    res = jaxlr.coulomb(pos, q, sigma=sig)  # auto → direct for an open boundary
    assert res.params.method == "direct"
    assert res.stress is None
    assert abs(float(res.energy) - e_ref) <= 1e-12 * abs(e_ref)
    assert max_rel(res.potentials, phi_ref) <= 1e-12
    assert rms(res.forces - f_ref) <= 1e-12 * rms(f_ref)


def test_direct_two_charges_exact():
    """The docstring example: two unit charges 1 Å apart, and two Gaussians (erf kernel + self-energies)."""
    pos = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    res = jaxlr.coulomb(pos, np.array([1.0, -1.0]))
    assert float(res.energy) == pytest.approx(-KE, rel=1e-14)
    np.testing.assert_allclose(res.forces, [[KE, 0, 0], [-KE, 0, 0]], rtol=1e-14, atol=1e-12)
    sig = np.array([0.5, 0.8])
    res = jaxlr.coulomb(pos, np.array([1.0, -1.0]), sigma=sig)
    gamma = math.sqrt(0.5**2 + 0.8**2)
    expected = -KE * math.erf(1.0 / (SQRT2 * gamma)) + KE / (2 * math.sqrt(math.pi)) * (1 / 0.5 + 1 / 0.8)
    assert float(res.energy) == pytest.approx(expected, rel=1e-13)


# regression of a library bug found while writing these tests (fixed)
def test_coincident_gaussian_charges_are_finite():
    pos = np.array([[0.0, 0, 0], [0.0, 0, 0], [1.5, 0, 0]])
    q = np.array([1.0, -0.5, -0.5])
    sig = np.array([0.5, 1.0, 0.7])
    expected = KE / (2 * math.sqrt(math.pi)) * np.sum(q**2 / sig)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        gamma = math.sqrt(sig[i] ** 2 + sig[j] ** 2)
        r = np.linalg.norm(pos[i] - pos[j])
        kern = math.sqrt(2 / math.pi) / gamma if r == 0 else math.erf(r / (SQRT2 * gamma)) / r
        expected += KE * q[i] * q[j] * kern
    res = jaxlr.coulomb(pos, q, sigma=sig)
    assert float(res.energy) == pytest.approx(expected, rel=1e-12)


# ======================================================================================
# 2. float32
# ======================================================================================
# Budgets (relative RMS force error vs the float64 reference, in units of F₀), measured on
# these systems: float32 round-off alone costs ≈ 5e-7 F₀ for Ewald and PME (sums of O(100)
# pair terms and an FFT in 24-bit arithmetic; budget 5e-6) and ≈ 3e-7 F₀ for the direct sum
# (budget 2e-6).  At accuracy 1e-4 the method error dominates (measured 0.8–1.0e-4 for
# Ewald and PME), so the budget is the float64 bound 3 × accuracy = 3e-4.
F32_BUDGET = {"direct": 2e-6, "ewald": 3e-4, "pme": 3e-4}
F32_ROUNDOFF = 5e-6  # float32 vs float64 with identical parameters, in F₀


@pytest.mark.parametrize("method", METHODS3)
def test_float32(method):
    if method == "direct":
        pos, q, _ = random_cluster(71, 48)
        cell = None
        _, _, f_ref = ref.direct_energy(pos, q)
        f0 = force_scale(pos, q)
    else:
        s = reference_system("cubic-point")
        pos, q, cell, f_ref, f0 = s["pos"], s["q"], s["cell"], s["forces"], s["f0"]
    f32 = (lambda x: None if x is None else np.asarray(x, dtype=np.float32))  # noqa: E731
    res = jaxlr.coulomb(f32(pos), f32(q), cell=f32(cell), method=method, accuracy=1e-4)
    for x in (res.energy, res.potentials, res.forces) + ((res.stress,) if cell is not None else ()):
        assert x.dtype == jnp.float32
    err = rms(np.asarray(res.forces, dtype=np.float64) - f_ref) / f0
    print(f"float32 {method}: RMS force error / F0 = {err:.2e}")
    assert err <= F32_BUDGET[method]
    if method != "direct":
        p = res.params
        res64 = jaxlr.coulomb(pos, q, cell=cell, method=method, accuracy=1e-4, smearing=p.smearing,
                              cutoff=p.cutoff, k_cutoff=p.k_cutoff,
                              mesh=None if p.mesh is None else p.mesh.shape,
                              order=None if p.mesh is None else p.mesh.order)
        roundoff = rms(np.asarray(res.forces, dtype=np.float64) - np.asarray(res64.forces)) / f0
        print(f"float32 {method}: round-off alone / F0 = {roundoff:.2e}")
        assert roundoff <= F32_ROUNDOFF


# ======================================================================================
# 3. bad input
# ======================================================================================
def _good():
    pos, q, cell, sig = random_system(81, 6, triclinic=True, gaussian=True)
    return dict(positions=pos, charges=q, cell=cell, sigma=sig)


def _with(**changes):
    def make():
        kw = _good()
        for key, value in changes.items():
            kw[key] = value(kw) if callable(value) else value
        return kw
    return make


def _set(name, index, value):
    def change(kw):
        x = np.array(kw[name], dtype=np.float64)
        x[index] = value
        return x
    return change


def _flat_cell(cell):
    """Third vector almost in the plane of the first two (volume ~1e-8 of the box product)."""
    a, b = cell[0], cell[1]
    normal = np.cross(a, b) / np.linalg.norm(np.cross(a, b))
    return np.array([a, b, a + b + 1e-7 * normal])


BAD_INPUTS = {
    "positions-N2": (_with(positions=lambda kw: kw["positions"][:, :2]), "positions"),
    "positions-1d": (_with(positions=lambda kw: kw["positions"].ravel()), "positions"),
    "charges-length": (_with(charges=lambda kw: kw["charges"][:-1]), "charges"),
    "charges-2d": (_with(charges=lambda kw: kw["charges"][:, None]), "charges"),
    "sigma-length": (_with(sigma=lambda kw: np.append(kw["sigma"], 1.0)), "sigma"),
    "positions-nan": (_with(positions=_set("positions", (2, 1), np.nan)), "NaN"),
    "positions-inf": (_with(positions=_set("positions", (0, 0), np.inf)), "NaN or inf"),
    "charges-nan": (_with(charges=_set("charges", 3, np.nan)), "NaN"),
    "charges-inf": (_with(charges=_set("charges", 3, -np.inf)), "NaN or inf"),
    "sigma-nan": (_with(sigma=_set("sigma", 0, np.nan)), "NaN"),
    "cell-nan": (_with(cell=_set("cell", (1, 1), np.nan)), "NaN"),
    "cell-inf": (_with(cell=_set("cell", (0, 2), np.inf)), "NaN or inf"),
    "cell-shape": (_with(cell=lambda kw: kw["cell"][:2]), "cell"),
    "cell-singular": (_with(cell=lambda kw: np.array([kw["cell"][0], kw["cell"][1], kw["cell"][0] + kw["cell"][1]])),
                      "singular|degenerate"),
    "cell-flat": (_with(cell=lambda kw: _flat_cell(kw["cell"])), "singular|degenerate"),
    "cell-zero-row": (_with(cell=_set("cell", 2, 0.0)), "periodicity|zero"),
    "sigma-zero": (_with(sigma=_set("sigma", 1, 0.0)), "positive"),
    "sigma-negative": (_with(sigma=_set("sigma", 4, -0.5)), "positive"),
    "net-charge": (_with(charges=lambda kw: kw["charges"] + 0.1), "net charge"),
    "order-9": (_with(order=9, method="pme"), "order"),
    "order-3": (_with(order=3, method="pme"), "order"),
    "accuracy-zero": (_with(accuracy=0.0), "accuracy"),
    "accuracy-negative": (_with(accuracy=-1e-4), "accuracy"),
    "accuracy-one": (_with(accuracy=1.0), "accuracy"),
    "accuracy-large": (_with(accuracy=2.0), "accuracy"),
    "ewald-without-cell": (_with(cell=None, method="ewald"), "cell"),
    "pme-without-cell": (_with(cell=None, method="pme"), "cell"),
    "direct-with-cell": (_with(method="direct"), "direct"),
    "unknown-method": (_with(method="p3m"), "method"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_before_compilation(case):
    make, match = BAD_INPUTS[case]
    kw = make()
    size = coulomb_module.evaluate_coulomb._cache_size()
    with pytest.raises(ValueError, match=match):
        jaxlr.coulomb(**kw)
    assert coulomb_module.evaluate_coulomb._cache_size() == size


def test_inputs_not_modified():
    """coulomb(), tune_coulomb() and neighbor_list() never write into the caller's arrays."""
    kw = _good()
    kw["positions"] = kw["positions"] + 3.0 * kw["cell"][0]  # unwrapped: a wrap would show
    copies = {k: np.array(v, copy=True) for k, v in kw.items()}
    jaxlr.coulomb(**kw, method="pme", accuracy=1e-4)
    jaxlr.tune_coulomb(kw["positions"], kw["charges"], kw["cell"], kw["sigma"], accuracy=1e-4)
    jaxlr.neighbor_list(kw["positions"], 4.0, kw["cell"])
    for k, v in kw.items():
        np.testing.assert_array_equal(v, copies[k])
    f32 = {k: np.asarray(v, dtype=np.float32) for k, v in kw.items() if k != "cell"}
    copies = {k: v.copy() for k, v in f32.items()}
    jaxlr.coulomb(**f32)  # open boundary, float32
    for k, v in f32.items():
        np.testing.assert_array_equal(v, copies[k])


# regressions of library bugs found while writing these tests (fixed)
@pytest.mark.parametrize("override", [dict(smearing=0.0), dict(smearing=float("nan")),
                                      dict(smearing=-1.0, cutoff=5.0, k_cutoff=3.0)],
                         ids=["smearing-zero", "smearing-nan", "smearing-negative"])
def test_explicit_parameters_validated(override):
    pos, q, cell, _ = random_system(93, 6, triclinic=True)
    with pytest.raises(ValueError, match="smearing"):
        jaxlr.coulomb(pos, q, cell=cell, method="ewald", accuracy=1e-5, **override)


def test_accuracy_accepts_numpy_scalars():
    pos, q, cell, _ = random_system(94, 6, triclinic=True)
    jaxlr.coulomb(pos, q, cell=cell, method="ewald", accuracy=np.float32(1e-4), stress=False)
