"""The Coulomb tuner (``jaxlr.tune_coulomb``, ``jaxlr.tuning``): its error models and
its choices — the closed-form mesh spacing, the automatic method, and an honest error
estimate when an explicit cutoff makes the requested accuracy hard to reach.

Accuracy convention (DESIGN.md): ``accuracy`` is the RMS force error per atom divided by
F₀ = ``jaxlr.tuning._coulomb.force_scale(R, q, cell)``, the RMS force of uncorrelated point charges.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rms
from coulomb_helpers import reference_system

import jaxlr


def test_tuner_mesh_spacing_closed_form_equals_bisection():
    """The tuner's largest admissible mesh spacing, solved in closed form from the fitted
    error model, is the boundary that bisection finds (to rounding), inside and below the
    calibrated range of h/s and at both clamps of the search interval."""
    from jaxlr.tuning._coulomb import PME_ERROR_FIT, _max_mesh_spacing, pme_mesh_error
    from jaxlr.tuning._search import bisect

    rng = np.random.default_rng(5)
    q2, n, volume = 4000.0, 4000, 40000.0
    for _ in range(400):
        s = float(rng.uniform(0.5, 3.0))
        order = int(rng.choice(sorted(PME_ERROR_FIT)))
        budget = float(10.0 ** rng.uniform(-12, 2))

        def ok(h):
            return pme_mesh_error(q2, n, volume, h, s, order) <= budget

        h = _max_mesh_spacing(q2, n, volume, s, order, budget)
        assert h == pytest.approx(bisect(ok, 1e-3 * s, 2.0 * s), rel=1e-12)
        assert ok(h) or h == 1e-3 * s
        assert h == 2.0 * s or not ok(h * (1.0 + 1e-9))
    assert _max_mesh_spacing(q2, n, volume, 1.0, 6, 1e6) == 2.0   # everything admissible
    assert _max_mesh_spacing(q2, n, volume, 1.0, 6, 1e-30) == 1e-3  # nothing: the finest end


def test_auto_method_meets_accuracy():
    s = reference_system("triclinic-point")
    acc = 1e-5
    res = jaxlr.coulomb(s["pos"], s["q"], cell=s["cell"], accuracy=acc, stress=False)
    assert res.params.method in ("ewald", "pme")
    assert rms(np.asarray(res.forces) - s["forces"]) <= 3 * acc * s["f0"]
    assert jaxlr.coulomb(s["pos"][:5], s["q"][:5]).params.method == "direct"  # open → direct


# regression of a library bug found while writing these tests (fixed)
def test_explicit_cutoff_with_wide_gaussians_is_honest():
    s = reference_system("cubic-gauss")
    acc = 1e-5
    try:
        res = jaxlr.coulomb(s["pos"], s["q"], cell=s["cell"], sigma=s["sigma"], method="pme",
                            accuracy=acc, cutoff=3.45, stress=False)
    except ValueError:
        return  # refusing an unreachable accuracy is fine
    achieved = rms(np.asarray(res.forces) - s["forces"]) / s["f0"]
    assert achieved <= 3 * max(acc, res.params.estimated_error)
