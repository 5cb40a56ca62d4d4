"""Worked example: reference density coefficients for one water molecule from PySCF.

The multipolar charge-equilibration model of :mod:`jaxlr.equilibration` predicts the
coefficients of a small atom-centred basis of s and p Gaussians.  Training data for it
comes from density fitting of a quantum-chemistry electron density *in the same basis*,
in the Coulomb metric.  This script

1. runs a Hartree–Fock calculation on water with PySCF;
2. builds a PySCF auxiliary basis whose functions are exactly the jaxlr basis functions
   (s and p Gaussians with exponents α = 1/2σ², widths converted from Å to bohr);
3. density-fits the electron density with PySCF's integrals: ``J c = v`` with
   ``J = (k|1/r|l)`` (int2c2e) and ``v_k = Σ_μν (k|1/r|μν) D_μν`` (int3c2e);
4. projects the same density with :func:`jaxlr.project_density`, feeding it PySCF's
   ``v`` converted to jaxlr's conventions, and compares the coefficients;
5. prints the atomic charges and dipoles of the fitted charge density (nuclei included)
   and the molecular dipole against PySCF's.

Conventions bridged here (see :mod:`jaxlr.electrostatics`): jaxlr's s functions carry unit
charge and its p functions unit dipole, ``p_α = −∂_α g = (x_α/σ²) g``; PySCF's auxiliary
functions are normalised to ∫χ² = 1 with the same shapes (real p functions ordered x, y,
z), so ``χ_k = n_k b_k`` with a positive factor n_k, read off the Coulomb self-interaction
``J_kk = n_k² (b_k|b_k)``.  The whole PySCF metric must then equal ``N J_jaxlr N`` — the
script checks it.  Energies: jaxlr works in eV and Å with KE = Hartree·bohr, so
``J_jaxlr [eV] = KE/bohr × J [Hartree]``.  The fitted quantity is the electron *charge*
density −ρ_e (jaxlr coefficients are charges), so the jaxlr coefficients are −n_k c_k.

Run: ``python notebooks/density_fitting_pyscf.py`` (needs ``pip install pyscf``; the
test ``tests/test_density.py::test_pyscf_density_fitting_example`` runs it when PySCF is
installed and skips otherwise).
"""

from __future__ import annotations

import numpy as np
import jax

jax.config.update("jax_enable_x64", True)   # a script may; the library never does

import jax.numpy as jnp  # noqa: E402

import jaxlr  # noqa: E402
from jaxlr.equilibration._density import GaussianBasis, per_atom_widths
from jaxlr.equilibration._density_fit import project_density
from jaxlr.electrostatics._gaussian_multipoles import multipole_matrix

BOHR = 0.529177210903            # Å per bohr
HARTREE_EV = jaxlr.KE / BOHR     # eV per Hartree consistent with jaxlr's KE (= 27.2113862…)
DEBYE_PER_E_ANG = 4.803204712570263

WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])   # Å
SPECIES = np.array([8, 1, 1])
SYMBOL = {1: "H", 8: "O"}

#: the jaxlr basis (widths in Å): even-tempered s functions from core to valence scale and
#: two p functions on oxygen, one on hydrogen
BASIS = GaussianBasis(
    species=(1, 8),
    s_widths=(GaussianBasis.even_tempered(0.12, 1.2, 4), GaussianBasis.even_tempered(0.04, 1.3, 7)),
    p_widths=((0.45,), (0.25, 0.6)),
)


def pyscf_aux_basis(basis: GaussianBasis) -> dict:
    """PySCF auxiliary basis (uncontracted s and p shells) with the jaxlr functions' shapes."""
    aux = {}
    for z, s_w, p_w in zip(basis.species, basis.s_widths, basis.p_widths):
        shells = [[0, [1.0 / (2.0 * (w / BOHR) ** 2), 1.0]] for w in s_w]
        shells += [[1, [1.0 / (2.0 * (w / BOHR) ** 2), 1.0]] for w in p_w]
        aux[SYMBOL[z]] = shells
    return aux


def aux_to_jaxlr_slots(auxmol, species, basis: GaussianBasis) -> np.ndarray:
    """For every PySCF auxiliary function, its flat jaxlr slot ``atom * n_basis + slot``."""
    index = basis.index(species)
    slots = np.empty(auxmol.nao, dtype=np.int64)
    loc = auxmol.ao_loc
    for shell in range(auxmol.nbas):
        atom, ang = auxmol.bas_atom(shell), auxmol.bas_angular(shell)
        width = BOHR / np.sqrt(2.0 * float(auxmol.bas_exp(shell)[0]))      # Å
        a = index[atom]
        widths = basis.s_widths[a] if ang == 0 else basis.p_widths[a]
        k = int(np.argmin(np.abs(np.array(widths) - width)))
        assert abs(widths[k] - width) < 1e-9 * width, "auxiliary shell not in the jaxlr basis"
        first = k if ang == 0 else basis.n_s + 3 * k
        for m in range(loc[shell + 1] - loc[shell]):    # s: one function; p: x, y, z
            slots[loc[shell] + m] = atom * basis.n_basis + first + m
    return slots


def run(basis: str = "def2-svp", verbose: bool = True) -> dict:
    """Fit the HF/``basis`` density of water with PySCF and with jaxlr; return the comparison."""
    from pyscf import df, gto, scf

    atom = [(SYMBOL[z], tuple(r)) for z, r in zip(SPECIES, WATER)]
    mol = gto.M(atom=atom, basis=basis, unit="Angstrom", verbose=0)
    mf = scf.RHF(mol).run()
    dm = mf.make_rdm1()
    auxmol = df.addons.make_auxmol(mol, pyscf_aux_basis(BASIS))

    # PySCF density fitting in the Coulomb metric (atomic units, PySCF normalisation)
    metric = auxmol.intor("int2c2e")
    v_pyscf = np.einsum("ijk,ij->k", df.incore.aux_e2(mol, auxmol, intor="int3c2e", aosym="s1"), dm)
    c_pyscf = np.linalg.solve(metric, v_pyscf)

    # the same metric from jaxlr, converted to Hartree for unit-normalised functions
    slots = aux_to_jaxlr_slots(auxmol, SPECIES, BASIS)
    s_w, p_w = (jnp.asarray(w) for w in BASIS.width_arrays())
    sigma_s, sigma_p, _ = per_atom_widths(BASIS.index(SPECIES), s_w, p_w, BASIS)
    j_jaxlr = np.asarray(multipole_matrix(jnp.asarray(WATER), sigma_s, sigma_p))[np.ix_(slots, slots)] / HARTREE_EV
    norm = np.sqrt(np.diag(metric) / np.diag(j_jaxlr))                    # χ_k = n_k b_k
    metric_mismatch = float(np.abs(metric - norm[:, None] * j_jaxlr * norm[None, :]).max() / np.abs(metric).max())

    # jaxlr's projection of the electron charge density −ρ_e, from PySCF's v
    rhs = np.zeros(len(SPECIES) * BASIS.n_basis)
    rhs[slots] = -HARTREE_EV * v_pyscf / norm
    fit = project_density(WATER, SPECIES, basis=BASIS, rhs=rhs.reshape(len(SPECIES), BASIS.n_basis))
    c_jaxlr = np.asarray(fit.coefficients).reshape(-1)[slots]
    c_ref = -norm * c_pyscf
    coefficient_mismatch = float(np.abs(c_jaxlr - c_ref).max() / np.abs(c_ref).max())

    # the charge-conserving fit: exactly −N_e electrons
    n_elec = float(mol.nelectron)
    exact = project_density(WATER, SPECIES, basis=BASIS, rhs=rhs.reshape(len(SPECIES), BASIS.n_basis),
                            total_charge=-n_elec)
    charges = SPECIES + np.asarray(exact.charges)                          # nuclei + electrons
    dipole = SPECIES @ WATER + np.asarray(exact.total_dipole)              # e·Å
    dipole_pyscf = np.asarray(mf.dip_moment(unit="AU", verbose=0)) * BOHR  # e·Å

    report = {
        "metric_mismatch": metric_mismatch,
        "coefficient_mismatch": coefficient_mismatch,
        "electrons_unconstrained": -float(fit.charges.sum()),
        "electrons": -float(exact.charges.sum()),
        "charges": charges,
        "atomic_dipoles": np.asarray(exact.dipoles),
        "dipole": dipole,
        "dipole_pyscf": dipole_pyscf,
    }
    if verbose:
        print(f"HF/{basis} water, {auxmol.nao} auxiliary functions = jaxlr basis of {BASIS.n_basis} slots/atom")
        print(f"metric   |J_pyscf − N J_jaxlr N| / |J|   = {metric_mismatch:.2e}")
        print(f"coefficients |c_jaxlr − c_pyscf| / |c|    = {coefficient_mismatch:.2e}")
        print(f"electrons in the unconstrained fit       = {report['electrons_unconstrained']:.6f}")
        print("charge-conserving fit (nuclei included):")
        for z, q, mu in zip(SPECIES, charges, report["atomic_dipoles"]):
            print(f"  {SYMBOL[z]}  q = {q:+.4f} e   μ = {np.array2string(mu, precision=4)} e·Å")
        print(f"dipole from the fit  {np.array2string(dipole * DEBYE_PER_E_ANG, precision=4)} D")
        print(f"dipole from PySCF    {np.array2string(dipole_pyscf * DEBYE_PER_E_ANG, precision=4)} D")
    return report


if __name__ == "__main__":
    run()
