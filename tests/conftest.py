"""Strict test configuration for jaxlr and helpers shared by the test modules.

* float64 is enabled for the whole session (``jax_enable_x64``); float32 checks pass
  float32 arrays explicitly instead of switching x64 off.
* ``jax_debug_nans`` is on in every test (autouse fixture): a NaN produced anywhere —
  including a discarded branch of an unguarded ``where`` in eager mode — fails the test.
* ``tests/`` is put on ``sys.path`` so that test modules can ``import reference``,
  ``import crystals`` and ``from conftest import ...``.

Compilation dominates the runtime of these tests on a small CPU (1–4 s per new shape
or static configuration), so the tests compile with LLVM's optimisation level 0 (see
below), and the helpers below make it easy to reuse shapes: padded
systems share one compiled function, and explicit parameters avoid new neighbour-list
capacities.
"""

from __future__ import annotations

import gc
import os
import sys

# LLVM's optimisation level 0 for the compiled test functions: XLA's own passes (fusion,
# layout, buffer assignment) still run and the arithmetic is the same, but compiling,
# which dominates these tests, takes about 25 % less time (tests/test_models.py: 83 s
# against 108 s).  A level set in XLA_FLAGS by the caller is kept.  Read when JAX's CPU
# backend starts, so it must be set before the first computation.
#: XLA_FLAGS as the caller set them ("" if unset), for subprocesses that should compile as
#: users do (the notebook kernels of tests/test_notebooks.py); kept in the environment so
#: that pytest-xdist workers, which inherit the flags this file adds, see the caller's too
os.environ.setdefault("JAXLR_TESTS_CALLER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
XLA_FLAGS_OF_CALLER = os.environ["JAXLR_TESTS_CALLER_XLA_FLAGS"]
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_functions():
    """Drop JAX's compiled executables after each test module.

    Every executable that XLA's CPU backend compiles keeps its machine code in a few
    memory mappings, and the kernel allows a process at most ``vm.max_map_count`` of them
    (65,530 by default).  One pytest worker compiles thousands of functions over the run
    (three test modules alone left 19,500 mappings), and when an ``mmap`` fails inside
    LLVM the worker dies with a segmentation fault in ``backend_compile``.  Clearing the
    caches at the end of each module brings the count back to ~800; functions are rarely
    shared between modules, so the suite takes the same time.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _debug_nans():
    """Turn NaN checking on for every test (restored afterwards)."""
    previous = jax.config.jax_debug_nans
    jax.config.update("jax_debug_nans", True)
    try:
        yield
    finally:
        jax.config.update("jax_debug_nans", previous)


# --------------------------------------------------------------------------------------
# shared helpers (plain functions; import them with ``from conftest import ...``)
# --------------------------------------------------------------------------------------
def random_system(seed, n, *, triclinic=False, gaussian=False, density=0.1, neutral=True,
                  skew=0.25, sigma_range=(0.5, 1.2)):
    """Random periodic system: (positions (n, 3), charges (n,), cell (3, 3), sigma or None).

    Number density ``density`` atoms/Å³ (0.1 ≈ condensed matter), charges uniform in
    [-1, 1] shifted to neutrality (unless ``neutral=False``), Gaussian widths uniform in
    ``sigma_range``.  Triclinic cells are a cube times (1 + U(-skew, skew)).  Atoms are
    placed in the cell and a few deliberately outside (positions need not be wrapped).
    """
    rng = np.random.default_rng(seed)
    length = (n / density) ** (1.0 / 3.0)
    cell = np.eye(3) * length
    if triclinic:
        cell = cell @ (np.eye(3) + rng.uniform(-skew, skew, (3, 3)))
    frac = rng.uniform(0.0, 1.0, (n, 3))
    frac[: max(1, n // 10)] += rng.integers(-1, 2, (max(1, n // 10), 3))  # unwrapped atoms
    positions = frac @ cell
    charges = rng.uniform(-1.0, 1.0, n)
    if neutral:
        charges -= charges.mean()
    sigma = rng.uniform(*sigma_range, n) if gaussian else None
    return positions, charges, cell, sigma


def separated_points(rng, n, box, min_dist):
    """(n, 3) uniform points in [0, box)³, no two closer than ``min_dist`` (rejection sampling)."""
    pts = []
    while len(pts) < n:
        p = rng.uniform(0.0, box, 3)
        if all(np.linalg.norm(p - x) >= min_dist for x in pts):
            pts.append(p)
    return np.array(pts)


def random_cluster(seed, n, *, gaussian=False, box=8.0, min_dist=0.8):
    """Random open-boundary cluster with no two atoms closer than ``min_dist`` Å."""
    rng = np.random.default_rng(seed)
    positions = separated_points(rng, n, box, min_dist)
    charges = rng.uniform(-1.0, 1.0, n)
    sigma = rng.uniform(0.5, 1.2, n) if gaussian else None
    return positions, charges, sigma


def rms(x):
    """Root mean square of the per-row norms of ``x`` (N, 3), or of the entries for 1-D x."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        return float(np.sqrt(np.mean(np.sum(x * x, axis=1))))
    return float(np.sqrt(np.mean(x * x)))


def random_rotation(seed):
    """A random proper rotation matrix (det = +1)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def pad_system(positions, charges, n_total, sigma=None, *, cell=None, seed=0):
    """Append zero-charge padding atoms up to ``n_total`` atoms.

    Returns ``(positions, charges, sigma, atom_mask)``; padding atoms sit at random
    points of the cell (or near the origin when open), carry charge 0 and width 1 Å.
    """
    n = len(charges)
    extra = n_total - n
    rng = np.random.default_rng(seed)
    frac = rng.uniform(0.0, 1.0, (extra, 3))
    pad_pos = frac @ np.asarray(cell) if cell is not None else frac * 5.0
    positions = np.concatenate([positions, pad_pos])
    charges = np.concatenate([charges, np.zeros(extra)])
    if sigma is not None:
        sigma = np.concatenate([sigma, np.ones(extra)])
    mask = np.arange(n_total) < n
    return positions, charges, sigma, mask


#: Coulomb constant (eV·Å/e²), the library's and the reference's value
KE = 14.399645351950548   # Hartree·Bohr in eV·Å (ASE: units.Hartree * units.Bohr)


#: the committed reference files of the tests (tests/data)
TEST_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def reference_frames(name):
    """The frames (``ase.Atoms``, fresh objects) of the reference file ``tests/data/NAME``
    (extended XYZ, optionally gzipped), e.g. the smoke outputs of the data generators."""
    import ase.io

    return ase.io.read(os.path.join(TEST_DATA, name), ":")


def smoke_generation(main, out, capsys, reference):
    """Run a data generator's command line ``all --set smoke --out OUT --seed 0`` twice and
    pair the assembled frames with those of the reference file ``tests/data/REFERENCE``.

    The second run must find every shard in place (a resumed run does no work).  The
    structure ids must match the reference's and the sampled positions agree to 1e-5 Å
    (MD on another BLAS may differ in the last bits).

    Returns:
      ``(stderr of the second run, [(new frame, reference frame, same)])``, ``same`` True
      when the positions agree to 1e-10 Å, so that the labels must too; otherwise a test
      labels the reference geometry itself.
    """
    import ase.io

    ref = reference_frames(reference)
    args = ["all", "--set", "smoke", "--out", str(out), "--seed", "0"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0                                      # resumes: no work
    err = capsys.readouterr().err
    new = ase.io.read(os.path.join(str(out), "smoke.extxyz.gz"), ":")
    assert [f.info["structure_id"] for f in new] == [f.info["structure_id"] for f in ref]
    pairs = []
    for f, r in zip(new, ref):
        dx = np.abs(f.get_positions() - r.get_positions()).max()
        assert dx < 1e-5, f"sampled geometry moved by {dx} Å"
        pairs.append((f, r, dx <= 1e-10))
    return err, pairs
