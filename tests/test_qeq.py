"""Charge equilibration: closed forms, solver agreement, implicit derivatives, invariances.

References are independent of jaxlr's solver code: closed-form two-atom charges, a numpy
KKT solve of the three-atom system with scipy's erf, finite differences, an unrolled CG
differentiated by plain autodiff, and the open-boundary limit of growing periodic boxes.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import jaxlr
from jaxlr.electrostatics._matrix import coulomb_matrix
from jaxlr.equilibration._qeq import qeq_energy, qeq_solve
from jaxlr.equilibration._solvers import solve_dense
from jaxlr.performance import costs

KE = 14.399645351950548   # Hartree·Bohr in eV·Å (ASE: units.Hartree * units.Bohr)


def _coulomb_matrix_numpy(R, sig):
    """Open-boundary Gaussian-charge Coulomb matrix, written independently of jaxlr."""
    n = len(R)
    C = np.zeros((n, n))
    for i in range(n):
        C[i, i] = KE / (math.sqrt(math.pi) * sig[i])
        for j in range(n):
            if i != j:
                r = np.linalg.norm(R[i] - R[j])
                g = math.sqrt(sig[i] ** 2 + sig[j] ** 2)
                C[i, j] = KE * erf(r / (math.sqrt(2) * g)) / r
    return C


def _kkt_numpy(R, chi, J, sig, totals, labels):
    n = len(R)
    A = _coulomb_matrix_numpy(R, sig) + np.diag(J)
    F = np.zeros((n, len(totals)))
    F[np.arange(n), labels] = 1.0
    K = np.block([[A, -F], [F.T, np.zeros((len(totals), len(totals)))]])
    sol = np.linalg.solve(K, np.concatenate([-chi, totals]))
    return sol[:n], sol[n:]


def _molecule(seed=0, n=6, spread=2.5):
    rng = np.random.default_rng(seed)
    R = rng.uniform(-spread, spread, (n, 3))
    chi = rng.normal(0.0, 2.0, n)
    J = rng.uniform(3.0, 9.0, n)
    sig = rng.uniform(0.6, 1.3, n)
    return R, chi, J, sig


def _periodic(seed, n, triclinic=True):
    from conftest import random_system
    R, _, cell, sig = random_system(seed, n, triclinic=triclinic, gaussian=True)
    rng = np.random.default_rng(seed + 100)
    return R, rng.normal(0.0, 1.5, n), rng.uniform(3.0, 9.0, n), sig, cell


# ----------------------------------------------------------------------------------------
# closed forms
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["dense", "pcg"])
def test_two_atoms_closed_form(solver):
    r, s1, s2 = 2.7, 0.9, 1.3
    chi = np.array([-1.0, 2.5])
    J = np.array([6.0, 4.0])
    R = np.array([[0.0, 0.0, 0.0], [0.0, r, 0.0]])
    c11, c22 = KE / (math.sqrt(math.pi) * s1), KE / (math.sqrt(math.pi) * s2)
    c12 = KE * erf(r / (math.sqrt(2.0) * math.hypot(s1, s2))) / r
    q_exact = (chi[1] - chi[0]) / (J[0] + J[1] + c11 + c22 - 2.0 * c12)
    res = jaxlr.qeq(R, chi, J, np.array([s1, s2]), solver=solver, tol=1e-12)
    np.testing.assert_allclose(np.asarray(res.charges), [q_exact, -q_exact], rtol=1e-10, atol=1e-13)
    # chemical potential: χ_1 + (J_1 + C_11) q_1 + C_12 q_2
    mu = chi[0] + (J[0] + c11) * q_exact - c12 * q_exact
    np.testing.assert_allclose(float(res.chemical_potential[0]), mu, rtol=1e-9)
    e = chi[0] * q_exact - chi[1] * q_exact + 0.5 * (J[0] + J[1] + c11 + c22 - 2 * c12) * q_exact**2
    np.testing.assert_allclose(float(res.energy), e, rtol=1e-10)


def test_three_atoms_charged_against_numpy_kkt():
    R, chi, J, sig = _molecule(1, n=3)
    res = jaxlr.qeq(R, chi, J, sig, total_charge=-1.0)
    q_ref, mu_ref = _kkt_numpy(R, chi, J, sig, np.array([-1.0]), np.zeros(3, int))
    np.testing.assert_allclose(np.asarray(res.charges), q_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.chemical_potential), mu_ref, rtol=1e-10)
    assert abs(float(res.charges.sum()) + 1.0) < 1e-12


def test_fragments_sum_exactly_and_match_numpy():
    R, chi, J, sig = _molecule(2, n=9, spread=4.0)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    totals = np.array([1.0, -1.0, 0.0])
    q_ref, mu_ref = _kkt_numpy(R, chi, J, sig, totals, labels)
    for solver in ("dense", "pcg"):
        res = jaxlr.qeq(R, chi, J, sig, fragments=labels, fragment_charges=totals, solver=solver, tol=1e-11)
        q = np.asarray(res.charges)
        np.testing.assert_allclose(np.bincount(labels, weights=q), totals, atol=1e-12)
        np.testing.assert_allclose(q, q_ref, atol=1e-9)
        np.testing.assert_allclose(np.asarray(res.chemical_potential), mu_ref, atol=1e-8)


# ----------------------------------------------------------------------------------------
# periodic: solvers agree, smearing independence, open-boundary limit
# ----------------------------------------------------------------------------------------
def test_dense_equals_pcg_periodic_ewald_and_pme():
    R, chi, J, sig, cell = _periodic(3, 96)
    dense = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="dense", accuracy=1e-9)
    pcg_ewald = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="pcg", method="ewald", accuracy=1e-9,
                          tol=1e-10)
    pcg_pme = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="pcg", method="pme", accuracy=1e-7,
                        tol=1e-9)
    q = np.asarray(dense.charges)
    assert dense.params.solver == "dense" and int(pcg_pme.iterations) > 0
    np.testing.assert_allclose(np.asarray(pcg_ewald.charges), q, atol=1e-9)
    # both sides carry Ewald errors of the requested 1e-9 (relative force error): the
    # energies agree to that order (measured 3e-10)
    np.testing.assert_allclose(float(pcg_ewald.energy), float(dense.energy), rtol=1e-9)
    # PME at 1e-7 force accuracy: charges to ~1e-7 relative of their spread
    np.testing.assert_allclose(np.asarray(pcg_pme.charges), q, atol=2e-6 * np.abs(q).max())
    np.testing.assert_allclose(np.asarray(pcg_pme.forces), np.asarray(dense.forces),
                               atol=1e-5 * np.abs(np.asarray(dense.forces)).max())
    assert abs(float(dense.charges.sum())) < 1e-12 and abs(float(pcg_pme.charges.sum())) < 1e-12


@pytest.mark.slow
def test_mesh_preconditioner_same_answer_fewer_iterations():
    R, chi, J, sig, cell = _periodic(4, 300, triclinic=False)
    kw = dict(cell=cell, solver="pcg", method="pme", accuracy=1e-6, tol=1e-8)
    jac = jaxlr.qeq(R, chi, J, sig, preconditioner="jacobi", **kw)
    mesh = jaxlr.qeq(R, chi, J, sig, preconditioner="mesh", **kw)
    np.testing.assert_allclose(np.asarray(mesh.charges), np.asarray(jac.charges), atol=1e-7)
    assert int(mesh.iterations) < int(jac.iterations)


@pytest.mark.slow
def test_mesh_preconditioner_iterations_flat_in_system_size():
    """8× more atoms (box 2× wider, longest-wave eigenvalue 4× larger): Jacobi needs
    clearly more iterations, the mesh preconditioner about as many (measured 20 → 22
    against 33 → 65 for N = 500 → 4000)."""
    counts = {}
    for n in (500, 4000):
        R, chi, J, sig, cell = _periodic(6, n, triclinic=False)
        kw = dict(cell=cell, solver="pcg", method="pme", accuracy=1e-6, tol=1e-6)
        counts[n] = [int(jaxlr.qeq(R, chi, J, sig, preconditioner=p, **kw).iterations) for p in ("mesh", "jacobi")]
    (mesh_small, jac_small), (mesh_large, jac_large) = counts[500], counts[4000]
    assert jac_large >= 1.5 * jac_small, counts
    assert mesh_large <= 1.2 * mesh_small + 1, counts
    assert mesh_large < 0.5 * jac_large, counts


def test_warm_start_cuts_iterations():
    R, chi, J, sig, cell = _periodic(5, 128)
    kw = dict(cell=cell, solver="pcg", method="pme", accuracy=1e-6, tol=1e-8)
    cold = jaxlr.qeq(R, chi, J, sig, **kw)
    # the same Coulomb parameters for the moved atoms (the tuner's pick can shift with
    # the positions), so the cold solves share one compiled function
    c = cold.params.coulomb
    kw.update(smearing=float(c.smearing), cutoff=float(c.cutoff), mesh=c.mesh)
    moved = R + np.random.default_rng(0).normal(0.0, 0.01, R.shape)
    cold2 = jaxlr.qeq(moved, chi, J, sig, **kw)
    warm = jaxlr.qeq(moved, chi, J, sig, guess=np.asarray(cold.charges), **kw)
    np.testing.assert_allclose(np.asarray(warm.charges), np.asarray(cold2.charges), atol=1e-7)
    assert int(warm.iterations) < int(cold2.iterations)


def test_independent_of_ewald_smearing():
    R, chi, J, sig, cell = _periodic(6, 64)
    a = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="dense", accuracy=1e-10, smearing=1.2)
    b = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="dense", accuracy=1e-10, smearing=2.1)
    np.testing.assert_allclose(np.asarray(a.charges), np.asarray(b.charges), atol=1e-9)
    np.testing.assert_allclose(float(a.energy), float(b.energy), rtol=1e-9)


def test_periodic_charges_approach_open_cluster():
    R, chi, J, sig = _molecule(7, n=5, spread=1.5)
    q_open = np.asarray(jaxlr.qeq(R, chi, J, sig).charges)
    errs = []
    for length in (12.0, 24.0, 48.0):
        res = jaxlr.qeq(R, chi, J, sig, cell=np.eye(3) * length, solver="dense", accuracy=1e-9)
        errs.append(np.abs(np.asarray(res.charges) - q_open).max())
    # tin-foil boundary of a neutral, dipolar cluster: the surface term 2πM²/3V shifts the
    # potentials by O(M·R/V), so the error decays like L^-3 (measured ratios ≈ 8)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-3 * np.abs(q_open).max()
    assert errs[1] / errs[2] > 4.0


def test_charged_periodic_needs_background():
    R, chi, J, sig, cell = _periodic(8, 32)
    with pytest.raises(ValueError, match="background"):
        jaxlr.qeq(R, chi, J, sig, cell=cell, total_charge=1.0)
    res = jaxlr.qeq(R, chi, J, sig, cell=cell, total_charge=1.0, background=True, solver="dense", accuracy=1e-9)
    pcg = jaxlr.qeq(R, chi, J, sig, cell=cell, total_charge=1.0, background=True, solver="pcg",
                    method="ewald", tol=1e-10, accuracy=1e-9)
    assert abs(float(res.charges.sum()) - 1.0) < 1e-12
    np.testing.assert_allclose(np.asarray(pcg.charges), np.asarray(res.charges), atol=1e-7)


# ----------------------------------------------------------------------------------------
# forces, stress, derivatives
# ----------------------------------------------------------------------------------------
def _ewald_setup(R, cell, sig, accuracy=1e-9):
    res = jaxlr.coulomb(R, np.where(np.arange(len(R)) % 2, 1.0, -1.0), cell=cell, sigma=sig,
                        method="ewald", accuracy=accuracy)
    p = res.params
    return dict(cell=jnp.asarray(cell), smearing=p.smearing, neighbors=jaxlr.neighbor_list(R, p.cutoff + 1.0, cell),
                kvectors=jaxlr.electrostatics.half_space_kvectors(cell, p.k_cutoff), method="ewald")


def test_forces_are_hellmann_feynman_and_match_finite_differences():
    R, chi, J, sig, cell = _periodic(9, 24)
    res = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="dense", accuracy=1e-10)
    fixed = jaxlr.coulomb(R, np.asarray(res.charges), cell=cell, sigma=sig, method="ewald", accuracy=1e-10)
    np.testing.assert_allclose(np.asarray(res.forces), np.asarray(fixed.forces), atol=1e-8)
    kw = _ewald_setup(R, cell, sig)

    @jax.jit  # compiled once: eager evaluation costs seconds per call
    def energy(pos):
        return qeq_energy(pos, chi, J, jnp.asarray(sig), **kw)

    grad = jax.jit(jax.grad(energy))(jnp.asarray(R))
    h = 1e-5
    for i, a in ((3, 0), (11, 2)):
        e = np.zeros_like(R)
        e[i, a] = h
        fd = -(energy(jnp.asarray(R + e)) - energy(jnp.asarray(R - e))) / (2 * h)
        assert abs(float(res.forces[i, a]) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))
        assert abs(float(-grad[i, a]) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))


@pytest.mark.slow
def test_stress_matches_finite_strain():
    R, chi, J, sig, cell = _periodic(10, 24)
    res = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="dense", accuracy=1e-10)
    kw = _ewald_setup(R, cell, sig)
    kw.pop("cell")
    volume = abs(np.linalg.det(cell))

    def energy(eps):
        strain = jnp.eye(3) + eps
        return qeq_energy(jnp.asarray(R) @ strain, chi, J, jnp.asarray(sig), cell=jnp.asarray(cell) @ strain, **kw)

    h = 1e-6
    for a, b in ((0, 0), (1, 2)):
        e = np.zeros((3, 3))
        e[a, b] = h
        fd = (energy(jnp.asarray(e)) - energy(jnp.asarray(-e))) / (2 * h) / volume
        assert abs(float(res.stress[a, b]) - float(fd)) < 1e-6 * max(1e-3, abs(float(fd)))


@pytest.mark.parametrize("periodic", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_charge_gradients_match_finite_differences(periodic):
    """d(downstream of q*)/d(χ, J, σ, R, cell, Q) through the implicit solve."""
    if periodic:
        R, chi, J, sig, cell = _periodic(11, 16)
        kw = _ewald_setup(R, cell, sig)
    else:
        R, chi, J, sig = _molecule(11, n=6)
        cell, kw = None, {}
    w = np.random.default_rng(0).normal(size=len(R))
    cell0 = kw.pop("cell", None)

    @jax.jit  # compiled once for the seven evaluations below
    def loss(pos, x, hard, s, c, total):
        q, lam, _ = qeq_solve(pos, x, hard, s, cell=c, fragment_charges=total, **kw)
        return jnp.sum(w * q**3) + jnp.sum(jnp.sin(pos[:, 0]) * q) + 0.3 * lam[0] ** 2

    args = [jnp.asarray(R), jnp.asarray(chi), jnp.asarray(J), jnp.asarray(sig), cell0, jnp.asarray([0.0])]
    if periodic:
        args[5] = jnp.asarray([0.0])   # charged periodic needs the background: keep Q fixed
        argnums = (0, 1, 2, 3, 4)
    else:
        argnums = (0, 1, 2, 3, 5)
    grads = jax.jit(jax.grad(loss, argnums=argnums))(*args)
    rng = np.random.default_rng(1)
    h = 1e-6
    for k, g in zip(argnums, grads):
        d = rng.normal(size=np.shape(args[k]))
        plus = list(args)
        minus = list(args)
        plus[k] = args[k] + h * d
        minus[k] = args[k] - h * d
        fd = (loss(*plus) - loss(*minus)) / (2 * h)
        assert abs(float(jnp.sum(g * d)) - float(fd)) < 1e-6 * max(1.0, abs(float(fd))), (k, g, fd)


@pytest.mark.slow   # ~15 s; ∂E*/∂χ through the front door and charge gradients stay in the default run
def test_energy_gradients_and_second_derivatives():
    R, chi, J, sig = _molecule(12, n=7)
    R, chi, J, sig = (jnp.asarray(x) for x in (R, chi, J, sig))

    def energy(pos, x, hard):
        return qeq_energy(pos, x, hard, sig)

    q = np.asarray(jaxlr.qeq(R, chi, J, sig).charges)
    g_chi = jax.grad(energy, argnums=1)(R, chi, J)
    g_hard = jax.grad(energy, argnums=2)(R, chi, J)
    np.testing.assert_allclose(np.asarray(g_chi), q, atol=1e-12)           # ∂E*/∂χ = q*
    np.testing.assert_allclose(np.asarray(g_hard), 0.5 * q**2, atol=1e-12)  # ∂E*/∂J = ½ q*²

    def force(x):
        return -jax.grad(energy)(R, x, J)[2, 1]

    dfdchi = jax.grad(force)(chi)
    h = 1e-6
    for i in (0, 4):
        e = np.zeros(7)
        e[i] = h
        fd = (force(chi + e) - force(chi - e)) / (2 * h)
        assert abs(float(dfdchi[i]) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))
    # Hessian-vector product in positions (forward-over-reverse through the custom JVP)
    v = jnp.asarray(np.random.default_rng(2).normal(size=(7, 3)))
    hvp = jax.jvp(jax.grad(lambda p: energy(p, chi, J)), (R,), (v,))[1]
    gp = jax.grad(lambda p: energy(p, chi, J))
    fd = (gp(R + 1e-5 * v) - gp(R - 1e-5 * v)) / 2e-5
    np.testing.assert_allclose(np.asarray(hvp), np.asarray(fd), atol=1e-6)


def test_front_door_grad_wrt_electronegativity():
    R, chi, J, sig = _molecule(13, n=5)
    g = jax.grad(lambda x: jaxlr.qeq(R, x, J, sig).energy)(jnp.asarray(chi))
    np.testing.assert_allclose(np.asarray(g), np.asarray(jaxlr.qeq(R, chi, J, sig).charges), atol=1e-10)


def test_implicit_gradient_equals_unrolled_cg():
    """Reverse-mode through a fixed number of plain projected-CG steps (unrolled) agrees."""
    R, chi, J, sig = _molecule(14, n=6)
    R, J, sig = jnp.asarray(R), jnp.asarray(J), jnp.asarray(sig)

    def unrolled(x):
        A = jaxlr.electrostatics.coulomb_matrix(R, sigma=sig) + jnp.diag(J)
        n = x.shape[0]
        P = jnp.eye(n) - jnp.ones((n, n)) / n          # projector on neutral vectors
        q = jnp.zeros(n)
        r = P @ (-x - A @ q)
        p = r
        for _ in range(2 * n):                            # plenty for n = 6 in float64
            ap = P @ (A @ p)
            rr = r @ r
            done = rr < 1e-26                             # converged: freeze (no 0/0)
            alpha = jnp.where(done, 0.0, rr / jnp.where(done, 1.0, p @ ap))
            q = q + alpha * p
            r_new = r - alpha * ap
            p = r_new + jnp.where(done, 0.0, (r_new @ r_new) / jnp.where(done, 1.0, rr)) * p
            r = r_new
        return q

    w = jnp.arange(6.0)

    def implicit(x):
        return qeq_solve(R, x, J, sig)[0]

    x = jnp.asarray(chi)
    np.testing.assert_allclose(np.asarray(unrolled(x)), np.asarray(implicit(x)), atol=1e-10)
    g_unrolled = jax.grad(lambda x: jnp.sum(w * unrolled(x) ** 2))(x)
    g_implicit = jax.grad(lambda x: jnp.sum(w * implicit(x) ** 2))(x)
    np.testing.assert_allclose(np.asarray(g_implicit), np.asarray(g_unrolled), atol=1e-9)


# ----------------------------------------------------------------------------------------
# invariances, padding, vmap, jit
# ----------------------------------------------------------------------------------------
def test_translation_rotation_permutation():
    R, chi, J, sig = _molecule(15, n=8)
    base = jaxlr.qeq(R, chi, J, sig)
    q0, f0 = np.asarray(base.charges), np.asarray(base.forces)
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    moved = jaxlr.qeq(R @ rot.T + np.array([3.0, -1.0, 7.0]), chi, J, sig)
    np.testing.assert_allclose(np.asarray(moved.charges), q0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(moved.forces), f0 @ rot.T, atol=1e-10)
    perm = np.random.default_rng(4).permutation(8)
    permuted = jaxlr.qeq(R[perm], chi[perm], J[perm], sig[perm])
    np.testing.assert_allclose(np.asarray(permuted.charges), q0[perm], atol=1e-12)


def test_supercell_gives_replicated_charges():
    R, chi, J, sig, cell = _periodic(16, 12, triclinic=True)
    single = jaxlr.qeq(R, chi, J, sig, cell=cell, solver="dense", accuracy=1e-10)
    shifts = np.array([[0, 0, 0], [1, 0, 0]])
    R2 = np.concatenate([R + s @ cell for s in shifts])
    cell2 = cell.copy()
    cell2[0] *= 2
    double = jaxlr.qeq(R2, np.tile(chi, 2), np.tile(J, 2), np.tile(sig, 2), cell=cell2, solver="dense",
                       accuracy=1e-10)
    np.testing.assert_allclose(np.asarray(double.charges), np.tile(np.asarray(single.charges), 2), atol=1e-9)
    np.testing.assert_allclose(float(double.energy), 2 * float(single.energy), rtol=1e-9)


@pytest.mark.parametrize("solver", ["dense", "pcg"])
def test_padding_and_vmap(solver):
    mols = [_molecule(20 + k, n=n) for k, n in enumerate((4, 6, 5))]
    n_max = 7
    stacks = {k: [] for k in ("R", "chi", "J", "sig", "mask")}
    for R, chi, J, sig in mols:
        pad = n_max - len(R)
        stacks["R"].append(np.concatenate([R, np.zeros((pad, 3))]))     # padding atoms coincide
        stacks["chi"].append(np.concatenate([chi, np.full(pad, 3.0)]))
        stacks["J"].append(np.concatenate([J, np.ones(pad)]))
        stacks["sig"].append(np.concatenate([sig, np.ones(pad)]))
        stacks["mask"].append(np.arange(n_max) < len(R))
    batch = {k: jnp.asarray(np.stack(v)) for k, v in stacks.items()}

    @jax.jit
    def solve(R, chi, J, sig, mask):
        q, _, _ = qeq_solve(R, chi, J, sig, atom_mask=mask, solver=solver, tol=1e-12)
        e = qeq_energy(R, chi, J, sig, atom_mask=mask, solver=solver, tol=1e-12)
        return q, e

    qs, es = jax.vmap(solve)(batch["R"], batch["chi"], batch["J"], batch["sig"], batch["mask"])
    for k, (R, chi, J, sig) in enumerate(mols):
        ref = jaxlr.qeq(R, chi, J, sig)
        np.testing.assert_allclose(np.asarray(qs[k, : len(R)]), np.asarray(ref.charges), atol=1e-10)
        assert np.all(np.asarray(qs[k, len(R):]) == 0.0)
        np.testing.assert_allclose(float(es[k]), float(ref.energy), rtol=1e-10)


def test_jit_equals_eager_and_no_recompilation():
    R, chi, J, sig = _molecule(30, n=6)
    eager = qeq_solve(jnp.asarray(R), chi, J, jnp.asarray(sig))[0]
    jitted = jax.jit(qeq_solve)(jnp.asarray(R), chi, J, jnp.asarray(sig))[0]
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-13)
    jaxlr.qeq(R, chi, J, sig)
    from jaxlr._api.qeq import _equilibrate
    before = _equilibrate._cache_size()
    jaxlr.qeq(R + 0.01, chi * 1.1, J, sig)
    assert _equilibrate._cache_size() == before


def test_dense_solver_flags_indefinite_systems():
    A = jnp.array([[1.0, 3.0], [3.0, 1.0]])         # indefinite on neutral vectors too
    B = jnp.array([[1.0], [0.0]])
    with jax.debug_nans(False):                      # the failed factorisation is NaN by design
        _, _, info = solve_dense(A, jnp.array([1.0, 0.0]), B, jnp.array([0.0]))
    assert not bool(info.converged)


def _lapack_operand_shapes(fn, *args):
    """Shapes of the float operands of every LAPACK call in the compiled program."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return [re.findall(r"f64\[([0-9,]*)\]", line) for line in text.splitlines()
            if "custom-call" in line and "lapack_" in line]


def test_dense_solves_are_unbatched_under_vmap():
    """Batched LAPACK calls can deadlock XLA's CPU thread pool: vmap must loop instead.

    Also checks the vmapped solutions against a numpy KKT solve and the derivatives
    (forward, reverse, second order) against finite differences.
    """
    from jax.test_util import check_grads

    from jaxlr.equilibration._solvers import spd_solve

    rng = np.random.default_rng(5)
    n, m, b = 24, 2, 4
    M = rng.standard_normal((b, n, n))
    A = jnp.asarray(M @ M.transpose(0, 2, 1) / n + np.eye(n))
    B = jnp.asarray((rng.random((b, n, m)) < 0.5).astype(float))
    c = jnp.asarray(rng.standard_normal((b, m)))
    rhs = jnp.asarray(rng.standard_normal((b, n)))
    x, lam, info = jax.vmap(solve_dense)(A, rhs, B, c)
    for k in range(b):
        kkt = np.block([[np.asarray(A[k]), -np.asarray(B[k])], [np.asarray(B[k]).T, np.zeros((m, m))]])
        ref = np.linalg.solve(kkt, np.concatenate([rhs[k], c[k]]))
        np.testing.assert_allclose(x[k], ref[:n], atol=1e-11)
        np.testing.assert_allclose(lam[k], ref[n:], atol=1e-11)
    assert bool(jnp.all(info.converged))
    np.testing.assert_allclose(jax.vmap(spd_solve)(A, rhs), np.linalg.solve(np.asarray(A), np.asarray(rhs)[..., None])[..., 0],
                               atol=1e-12)
    sym = lambda a: (a + a.T) / 2  # noqa: E731
    check_grads(lambda a, v, t: jnp.sum(jnp.sin(solve_dense(sym(a), v, B[0], t)[0])), (A[0], rhs[0], c[0]),
                order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)
    check_grads(lambda a, v: jnp.sum(jnp.sin(spd_solve(sym(a), v))), (A[0], rhs[0]), order=2,
                modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="spd_solve needs A of shape"):
        spd_solve(A[0], rhs[0, :5])

    def loss(a, v):
        return jnp.sum(solve_dense(a, v, B[0], c[0])[0] ** 2) + jnp.sum(spd_solve(a, v) ** 2)

    R, chi, J, sig = _molecule(33, n=6)
    batched = {
        "solve_dense, spd_solve": (jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))), (A, rhs)),
        "qeq_solve, qeq_energy": (jax.vmap(jax.grad(lambda r, x: qeq_energy(r, x, J, sig)
                                                    + jnp.sum(qeq_solve(r, x, J, sig)[0] ** 2), argnums=(0, 1))),
                       (jnp.stack([R, R + 0.01]), jnp.stack([chi, 1.1 * chi]))),
    }
    for name, (fn, args) in batched.items():
        shapes = _lapack_operand_shapes(fn, *args)
        assert shapes, name
        assert all(len(s.split(",")) <= 2 for call in shapes for s in call), (name, shapes)


def test_pcg_reports_non_convergence():
    R, chi, J, sig, cell = _periodic(31, 64)
    with pytest.raises(ValueError, match="did not converge"):
        jaxlr.qeq(R, chi, J, sig, cell=cell, solver="pcg", method="pme", maxiter=2, tol=1e-10)


def test_bad_input():
    R, chi, J, sig = _molecule(32, n=4)
    with pytest.raises(ValueError, match="sigma"):
        jaxlr.qeq(R, chi, J, -sig)
    with pytest.raises(ValueError, match="hardness"):
        jaxlr.qeq(R, chi, -J, sig)
    with pytest.raises(ValueError, match="NaN"):
        jaxlr.qeq(R, np.array([np.nan, 0, 0, 0]), J, sig)
    with pytest.raises(ValueError):
        jaxlr.qeq(R, chi[:3], J, sig)
    with pytest.raises(ValueError, match="fragment"):
        jaxlr.qeq(R, chi, J, sig, fragments=np.array([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="fragment_charges"):
        jaxlr.qeq(R, chi, J, sig, fragments=np.array([0, 0, 1, 1]), fragment_charges=np.array([1.0]))
    with pytest.raises(ValueError, match="total_charge"):
        jaxlr.qeq(R, chi, J, sig, fragments=np.array([0, 0, 1, 1]), fragment_charges=np.array([1.0, 0.0]),
                  total_charge=2.0)
    with pytest.raises(ValueError, match="method"):
        jaxlr.qeq(R, chi, J, sig, method="lu")
    with pytest.raises(ValueError, match="accuracy"):
        jaxlr.qeq(R, chi, J, sig, accuracy=0.0)
    chi_copy = chi.copy()
    jaxlr.qeq(R, chi, J, sig)
    np.testing.assert_array_equal(chi, chi_copy)
    # a dense factorisation beyond the limit is refused up front (no O(N³) work, no crash)
    big = costs().dense_limit + 1
    rb = np.random.default_rng(0).uniform(0.0, 60.0, (big, 3))
    with pytest.raises(ValueError, match="pcg"):
        jaxlr.qeq(rb, np.zeros(big), np.ones(big), np.ones(big), solver="dense")


@pytest.mark.parametrize("solver", ["dense", "pcg"])
def test_empty_fragment_is_harmless(solver):
    """A padded batch gives every structure the same number of fragments; an empty one
    (no atoms, total 0) must leave the charges unchanged and the gradients finite."""
    R = jnp.array([[0.0, 0, 0], [2.0, 0, 0], [0, 2.5, 0]])
    chi, J, s = jnp.array([0.0, 1.0, -0.5]), jnp.full(3, 8.0), jnp.ones(3)
    one, _, _ = qeq_solve(R, chi, J, s, fragment_charges=jnp.array([1.0]), solver=solver, tol=1e-12)

    @jax.jit
    def charges(c):
        return qeq_solve(R, c, J, s, fragments=jnp.zeros(3, int), fragment_charges=jnp.array([1.0, 0.0]),
                         solver=solver, tol=1e-12)[0]

    np.testing.assert_allclose(charges(chi), one, atol=1e-12)
    assert np.all(np.isfinite(jax.jit(jax.jacobian(charges))(chi)))


def test_coulomb_matrix_atom_mask_open_boundary():
    """Padding atoms may coincide with each other and with real atoms and have σ = 0: with
    ``atom_mask`` their rows and columns are exactly zero, the real block equals the
    unpadded matrix, and energies, forces and σ-gradients stay finite (debug_nans is on)."""
    R, chi, J, sig = _molecule(40, n=5)
    pad_R = np.concatenate([R, np.zeros((2, 3)), R[:1]])   # two at the origin, one on atom 0
    mask = np.arange(8) < 5
    q = np.array([0.3, -0.5, 0.4, -0.1, -0.1, 0.0, 0.0, 0.0])
    for sigma, pad_sigma in ((None, None), (sig, np.concatenate([sig, np.zeros(3)]))):
        C = coulomb_matrix(jnp.asarray(pad_R), sigma=None if sigma is None else jnp.asarray(pad_sigma),
                           atom_mask=jnp.asarray(mask))
        ref = coulomb_matrix(jnp.asarray(R), sigma=None if sigma is None else jnp.asarray(sigma))
        np.testing.assert_allclose(np.asarray(C[:5, :5]), np.asarray(ref), rtol=1e-14)
        assert np.all(np.asarray(C[5:]) == 0.0) and np.all(np.asarray(C[:, 5:]) == 0.0)

        def energy(pos, s):
            return 0.5 * q @ coulomb_matrix(pos, sigma=s, atom_mask=jnp.asarray(mask)) @ q

        s_in = None if sigma is None else jnp.asarray(pad_sigma)
        g = jax.jit(jax.grad(energy))(jnp.asarray(pad_R), s_in)
        g_ref = jax.jit(jax.grad(lambda pos: 0.5 * q[:5] @ coulomb_matrix(
            pos, sigma=None if sigma is None else jnp.asarray(sigma)) @ q[:5]))(jnp.asarray(R))
        np.testing.assert_allclose(np.asarray(g[:5]), np.asarray(g_ref), rtol=1e-12, atol=1e-12)
        assert np.all(np.asarray(g[5:]) == 0.0)
        if sigma is not None:
            gs = jax.jit(jax.grad(energy, argnums=1))(jnp.asarray(pad_R), s_in)
            assert np.all(np.isfinite(np.asarray(gs))) and np.all(np.asarray(gs[5:]) == 0.0)


def test_dense_qeq_padding_coincident_with_zero_width():
    """Open-boundary dense Qeq with padding atoms sitting on a real atom, σ = 0 and J = 0:
    the real atoms' charges, energy and forces equal the unpadded ones."""
    R, chi, J, sig = _molecule(41, n=6)
    pad_R = np.concatenate([R, R[:2]])
    mask = np.arange(8) < 6
    ext = (lambda x, v: jnp.asarray(np.concatenate([x, np.full(2, v)])))

    @jax.jit  # one compilation per shape: eager evaluation costs seconds
    def run(pos, chi_, J_, sig_, m):
        q, _, _ = qeq_solve(pos, chi_, J_, sig_, atom_mask=m, tol=1e-12)
        e, g = jax.value_and_grad(lambda p: qeq_energy(p, chi_, J_, sig_, atom_mask=m, tol=1e-12))(pos)
        return q, e, g

    q, e, g = run(jnp.asarray(pad_R), ext(chi, 0.0), ext(J, 0.0), ext(sig, 0.0), jnp.asarray(mask))
    q0, e0, g0 = run(jnp.asarray(R), jnp.asarray(chi), jnp.asarray(J), jnp.asarray(sig), None)
    np.testing.assert_allclose(np.asarray(q[:6]), np.asarray(q0), atol=1e-11)
    assert np.all(np.asarray(q[6:]) == 0.0)
    np.testing.assert_allclose(float(e), float(e0), rtol=1e-11)
    np.testing.assert_allclose(np.asarray(g[:6]), np.asarray(g0), rtol=1e-9, atol=1e-10)
    assert np.all(np.asarray(g[6:]) == 0.0)
