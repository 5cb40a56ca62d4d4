"""Molten NaCl helpers (``jaxlr.md._tosi_fumi``): the Tosi–Fumi short range, NACL_QEQ, molten_nacl.

References: the published parameters in kJ/mol (Anwar, Frenkel & Noro 2003), a numpy
all-pairs minimum-image sum with analytic forces and virial, finite strain; the OpenMM
comparison of the full rigid-ion model lives in ``tests/test_openmm_reference.py``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.md import NACL_QEQ, TOSI_FUMI_NACL, molten_nacl, tosi_fumi_neighbor_list, tosi_fumi_pair

space = pytest.importorskip("jax_md.space")
from jax_md import partition, quantity  # noqa: E402

KJ_MOL_PER_EV = 96.48533212331002     # e · N_A / 1000, exact in the 2019 SI


def test_parameters_match_the_published_kj_per_mol_table():
    """Tosi–Fumi NaCl in kJ/mol and Å as tabulated by Anwar, Frenkel & Noro, J. Chem. Phys.
    118, 728 (2003), Table I (Na–Na, Na–Cl, Cl–Cl); their constants differ in the 6th digit."""
    p = TOSI_FUMI_NACL
    pairs = ((0, 0), (0, 1), (1, 1))
    table = dict(A=(25.4435, 20.3548, 15.2661), sigma=(2.340, 2.755, 3.170), C=(101.1719, 674.4793, 6985.6786),
                 D=(48.1771, 837.0770, 14031.5785))
    for name, ref in table.items():
        got = np.array([np.asarray(getattr(p, name))[i, j] for i, j in pairs])
        scale = 1.0 if name == "sigma" else KJ_MOL_PER_EV
        np.testing.assert_allclose(got * scale, ref, rtol=2e-6)
    assert p.rho == 0.317 and p.charges == (1.0, -1.0)
    np.testing.assert_allclose(np.asarray(p.A), np.asarray(p.A).T)


def _reference(pos, cell, species, rc):
    """numpy: all pairs, minimum image (r_c < half the box), analytic forces and the virial
    W = Σ_pairs r_ij ⊗ f_j (f_j the force on j from i; the pressure tensor is W/V)."""
    p = TOSI_FUMI_NACL
    A, sig, C, D = (np.asarray(x) for x in (p.A, p.sigma, p.C, p.D))
    inv = np.linalg.inv(cell)
    e, forces, virial = 0.0, np.zeros_like(pos), np.zeros((3, 3))
    for i, j in itertools.combinations(range(len(pos)), 2):
        d = pos[j] - pos[i]
        d = d - np.round(d @ inv) @ cell
        r = np.linalg.norm(d)
        if r >= rc:
            continue
        a, b = species[i], species[j]
        ex = A[a, b] * np.exp((sig[a, b] - r) / p.rho)
        e += ex - C[a, b] / r**6 - D[a, b] / r**8
        dphi = -ex / p.rho + 6 * C[a, b] / r**7 + 8 * D[a, b] / r**9
        f = dphi * d / r                  # force on i (d points from i to j)
        forces[i] += f
        forces[j] -= f
        virial += np.outer(d, -f)         # Σ r_ij ⊗ f_j,  f_j = −f
    return e, forces, virial


@pytest.mark.parametrize("triclinic, fractional", [(False, True), (True, False)])
def test_energy_forces_stress_against_numpy(triclinic, fractional):
    """Energy, forces (−grad, eV/Å) and jax-md's stress (W/V, pressure sign) equal the numpy all-pairs sum
    to 1e-12 relative, cubic-fractional and triclinic-real; a skin of 1 Å keeps pairs between
    r_c and r_c + skin in the list, and they must not count."""
    atoms = molten_nacl(64, seed=3, jitter=0.3)
    species = (atoms.numbers == 17).astype(int)
    cell = atoms.cell.array
    if triclinic:
        cell = cell @ np.array([[1.0, 0.0, 0.0], [0.15, 1.0, 0.0], [-0.1, 0.05, 1.05]])   # lower triangular
    frac = atoms.get_scaled_positions()
    pos = frac @ cell
    box = jnp.asarray(cell.T)
    rc = 4.5
    disp, _ = space.periodic_general(box, fractional_coordinates=fractional)
    nfn, efn = tosi_fumi_neighbor_list(disp, box, species, r_cutoff=rc, dr_threshold=1.0,
                                       fractional_coordinates=fractional)
    R = jnp.asarray(frac if fractional else pos)
    nbrs = nfn.allocate(R)
    e, g = jax.jit(jax.value_and_grad(efn))(R, nbrs)
    e_ref, f_ref, w_ref = _reference(pos, cell, species, rc)
    assert abs(float(e) - e_ref) <= 1e-12 * abs(e_ref)
    np.testing.assert_allclose(-np.asarray(g), f_ref, rtol=0, atol=1e-12 * np.abs(f_ref).max())
    stress = np.asarray(jax.jit(lambda R, nb: quantity.stress(efn, R, box, neighbor=nb))(R, nbrs))
    volume = abs(np.linalg.det(cell))
    np.testing.assert_allclose(stress, w_ref / volume, rtol=0, atol=1e-12 * np.abs(w_ref).max() / volume)


def test_rock_salt_lattice_constant_and_energy():
    """Physics of the rigid-ion model: the static rock-salt crystal (Tosi–Fumi short range by
    a direct lattice sum to 12 shells with tosi_fumi_pair, Coulomb by the Madelung constant
    1.747565) has its minimum near the experimental lattice constant (5.60 Å extrapolated to
    0 K; 5.64 Å at room temperature) and a lattice energy within 2 % of the Born–Haber value
    (−787 kJ/mol), as Tosi and Fumi fitted it to do."""
    n = np.arange(-12, 13)
    g = np.stack(np.meshgrid(n, n, n, indexing="ij"), -1).reshape(-1, 3)
    g = g[np.any(g != 0, axis=1)]
    unlike = g.sum(axis=1) % 2 == 1           # sites of the other species
    k_e = 14.399645351950548

    @jax.jit
    def energy_per_pair(a):
        r = jnp.linalg.norm(jnp.asarray(g, a.dtype), axis=1) * a / 2
        na = jnp.where(unlike, tosi_fumi_pair(r, 0, 1), tosi_fumi_pair(r, 0, 0))
        cl = jnp.where(unlike, tosi_fumi_pair(r, 1, 0), tosi_fumi_pair(r, 1, 1))
        return 0.5 * (na.sum() + cl.sum()) - 1.747564594633 * k_e / (a / 2)

    a = jnp.linspace(5.4, 5.8, 401)
    e = jax.vmap(energy_per_pair)(a)
    a0 = float(a[jnp.argmin(e)])
    assert abs(a0 - 5.60) < 0.03
    assert abs(float(e.min()) * KJ_MOL_PER_EV + 787.0) < 0.02 * 787.0
    assert tosi_fumi_pair(jnp.ones((2, 3), jnp.float32) * 3.0, 0, 1).dtype == jnp.float32
    assert float(tosi_fumi_pair(2.0, 1, 1)) > 0 and float(tosi_fumi_pair(2.0, 0, 0)) > 0


@pytest.mark.parametrize("n", [64, 250, 1000])
def test_molten_nacl(n):
    """Composition, density, charges, no overlaps; the box is a cube of the right volume."""
    atoms = molten_nacl(n, density_g_cm3=1.5, seed=1)
    z = atoms.numbers
    assert len(atoms) == n and np.sum(z == 11) == n // 2 and np.sum(z == 17) == n // 2
    mass_g = atoms.get_masses().sum() / 6.02214076e23
    assert abs(mass_g / (atoms.get_volume() * 1e-24) - 1.5) < 1e-10
    np.testing.assert_array_equal(atoms.get_initial_charges(), np.where(z == 11, 1.0, -1.0))
    d = atoms.get_all_distances(mic=True)[np.triu_indices(n, 1)]
    assert d.min() > 1.5
    frac = atoms.get_scaled_positions(wrap=False)
    assert np.all((frac >= 0) & (frac < 1))
    # the next neighbour of an ion on the lattice is of the other species (rock salt)
    ordered = molten_nacl(64, jitter=0.0)
    dist = ordered.get_all_distances(mic=True) + np.eye(64) * 100
    nearest = np.argmin(dist, axis=1)
    assert np.all(ordered.numbers[nearest] != ordered.numbers)


def test_nacl_qeq_values():
    """Rappé–Goddard χ and J⁰/2, σ = 1 Å (see the NACL_QEQ comment)."""
    assert NACL_QEQ.electronegativity == (2.843, 8.564)
    np.testing.assert_allclose(NACL_QEQ.hardness, (2.296, 4.946))
    assert NACL_QEQ.sigma == (1.0, 1.0)


def test_refusals():
    atoms = molten_nacl(64)
    box = jnp.asarray(atoms.cell.array.T)
    species = (atoms.numbers == 17).astype(int)
    disp, _ = space.periodic_general(box)
    with pytest.raises(ValueError, match="0 \\(Na\\) or 1 \\(Cl\\)"):
        tosi_fumi_neighbor_list(disp, box, atoms.numbers, r_cutoff=5.0)
    with pytest.raises(ValueError, match="integer"):
        tosi_fumi_neighbor_list(disp, box, species.astype(float), r_cutoff=5.0)
    with pytest.raises(ValueError, match="half the smallest width"):
        tosi_fumi_neighbor_list(disp, box, species, r_cutoff=9.0)
    with pytest.raises(ValueError, match="r_cutoff must be > 0"):
        tosi_fumi_neighbor_list(disp, box, species, r_cutoff=-1.0)
    with pytest.raises(ValueError, match="Dense"):
        tosi_fumi_neighbor_list(disp, box, species, r_cutoff=5.0, format=partition.Sparse)
    with pytest.raises(ValueError, match="TosiFumiParams"):
        tosi_fumi_neighbor_list(disp, box, species, r_cutoff=5.0, params={"A": 1.0})
    with pytest.raises(ValueError, match="fractional"):
        disp_real, _ = space.periodic_general(box, fractional_coordinates=False)
        tosi_fumi_neighbor_list(disp_real, box, species, r_cutoff=5.0)
    for bad in (63, 0, 2.5):
        with pytest.raises(ValueError, match="even integer"):
            molten_nacl(bad)
    with pytest.raises(ValueError, match="density"):
        molten_nacl(64, density_g_cm3=0.0)
    nfn, efn = tosi_fumi_neighbor_list(disp, box, species, r_cutoff=5.0)
    R = jnp.asarray(atoms.get_scaled_positions())
    with pytest.raises(ValueError, match="unknown keyword"):
        efn(R, nfn.allocate(R), charges=1.0)
