"""The water response set: (H2O)n, n = 1–6, at PBE/def2-SVPD with finite-field polarisabilities
and the exact electrostatic potential on Merz–Kollman shells (test only).

Run (staged, resumable, deterministic for a given seed; one worker is one core)::

    OMP_NUM_THREADS=1 python -m jaxlr.data.generate.water_response {sample,label,assemble,all} \\
        --out runs/response --set {response,smoke} --seed 0 [--dest FILE]

(or ``python jaxlr/data/generate/water_response.py ...``).  Like
:mod:`jaxlr.data.generate.water_clusters`, whose sampling, Merz–Kollman points and exact
potential it reuses (and nothing of jaxlr itself), every stage writes small shards that are
renamed into place when complete — ``OUT/samples/SET/traj_*.extxyz`` and
``OUT/labels/response/*.npz`` (``OUT/labels/response_smoke`` for the smoke set) — so a killed
run resumes where it stopped when the same command is rerun.  A structure whose SCF does not
converge (also with a 0.2 Ha level shift) is dropped and logged in ``dropped.jsonl``.

Cost: one label is a zero-field SCF and six warm-started field SCFs (a trimer: 15 + 6 × 12
core-s of process time), so ≈ 45 core-minutes for the 30 clusters; the bundled set took
2.1 h of wall time on one single-threaded worker sharing a loaded 2-core machine.

Why a separate set
------------------
Static polarisabilities need diffuse functions.  Measured here on the generator's water
monomer (``water_clusters.WATER``) with the settings below (finite field and the analytic
coupled-perturbed Kohn–Sham response agree to 3e-5): α_iso = 5.29 bohr³ at PBE/def2-SVP,
the basis of the training set, against 10.10 bohr³ at PBE/def2-SVPD and 9.86 bohr³ at
PBE/aug-cc-pVDZ.  The training data therefore under-polarise water by ~48 %; the axis that
suffers most is the one normal to the molecular plane (3.20 against 9.87 bohr³).  Models
are not trained on α, so theirs is not bound to either basis: this set measures it
(``benchmarks/water_response.py``).

Stage 1, sample
---------------
Exactly the main set's procedure (GFN2-xTB relax, Langevin MD at 200/300/450 K, snapshots
after 100 fs, ~10 % rattled by 0.05 Å; see :mod:`~jaxlr.data.generate.water_clusters`),
set ``response`` of its :func:`~jaxlr.data.generate.water_clusters.plan`: 5 trajectories per
size n = 1…6, one snapshot each, 30 structures.  The ``smoke`` set labels the first two
structures (a monomer and a dimer) of the main generator's smoke set.

Stage 2, label (PySCF; level of theory fixed)
----------------------------------------------
RKS PBE/def2-SVPD, ``dft.RKS(mol).density_fit(auxbasis="def2-universal-jkfit")``, grids
level 3, ``conv_tol = 1e-9`` (as the main set) and ``conv_tol_grad = 1e-7`` (PySCF's
default would be √conv_tol ≈ 3e-5: the dipole is not variational, its error is linear in
the orbital gradient, and α divides it by 2F — the tighter gradient makes the finite-field
α agree with the analytic one to 3e-5 instead of 1.5e-4 on the monomer).

* ``energy``: total energy, eV (1 Ha = 27.211386245988 eV), and ``energy_hartree``.
* ``dipole``: dipole of nuclei + electrons about the Cartesian origin, e·Å.
* ``polarizability`` (3, 3), e·Å²/V: α_ab = ∂μ_a/∂F_b by central differences,
  ``(μ(+F e_b) − μ(−F e_b)) / 2F`` with F = 0.001 a.u. (0.0514 V/Å).  The field enters the
  core Hamiltonian as ``h += F·r`` (the electron's charge is −e, so its energy in the
  potential φ = −F·r is +F·r; r about the origin, as the dipole), each field SCF is
  warm-started from the zero-field density and reuses its grids and fitted integrals.  The
  truncation error is O(F²) (hyperpolarisability): 4.5e-4 relative at F = 0.004, 1.1e-4 at
  0.002, 2.9e-5 at 0.001 and 2.7e-6 at 0.0005 on the def2-SVPD monomer against the
  analytic α; F = 0.001 and F/2 agree to 3e-5, well inside the 1e-3 asked for.  Units:
  1 a.u. of α (bohr³ = e²a₀²/E_h) = bohr²/E_h = 0.0102908 e·Å²/V; α in e·Å²/V times
  k_e = 14.39964 eV·Å/e² is the polarisability volume in Å³.
* ``alpha_iso_bohr3``: tr α / 3 in bohr³ (a.u.).
* ``alpha_analytic_deviation``: max |α_ff − α_cpks| / α_iso against the analytic static
  response (coupled-perturbed Kohn–Sham, :func:`analytic_polarizability`, same grids and
  fitted integrals) — the quality flag of the finite differences, computed for clusters
  of up to ``--analytic-max-waters`` (2) waters, NaN for the larger ones (it costs a
  quarter of a label: 519 of 2174 s for a hexamer), where the first labelled hexamer
  gave 5.5e-5.
* ``esp_points`` (M, 3), Å: Merz–Kollman shells of the main generator
  (:func:`~jaxlr.data.generate.water_clusters.mk_points`: 1.4, 1.6, 1.8, 2.0 × vdW radius,
  ≈1 point/Å²), rounded to 1e-6 Å before use so that the stored points are exact.
* ``esp`` (M,), V (= eV/e): the exact potential of the zero-field SCF (point nuclei and
  the electron density through ``int1e_grids``) at those points; × 1000/27.2114 gives mHa/e,
  the unit of :func:`jaxlr.train.esp_rmse`.

Stage 3, assemble
-----------------
A gzipped extended-XYZ file (``ase.io.read(path, ":")``; loaded by
:func:`jaxlr.data.load_water_response`).  Per frame: ``energy`` and ``dipole`` as ASE
calculator results; info ``polarizability`` (3 × 3), ``esp_points`` (M × 3) and ``esp`` (M,)
(JSON/space-separated arrays in the comment line, full precision), ``alpha_iso_bohr3``,
``alpha_analytic_deviation``, ``energy_hartree``, ``charge`` (0), ``n_waters``, sampling
provenance (``temperature_K``, ``trajectory``, ``snapshot``, ``md_time_fs``, ``rattled``,
``seed``, ``structure_id``) and label provenance (level, basis, auxbasis, grid level,
conv_tol, conv_tol_grad, field, package versions).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

if not __package__:                     # run as a file: import its siblings as the package "generate"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "generate"
from . import water_clusters as wc  # noqa: E402
from ._shards import (  # noqa: E402
    label_and_store,
    label_stage,
    labelled,
    run_stages,
    stage_parser,
    timed,
    write_assembled,
)

HARTREE_EV = wc.HARTREE_EV
BOHR = wc.BOHR

LEVEL = "PBE"
BASIS = "def2-svpd"
AUXBASIS = wc.AUXBASIS
GRID_LEVEL = wc.GRID_LEVEL
CONV_TOL = wc.CONV_TOL
CONV_TOL_GRAD = 1e-7
LEVEL_SHIFT = wc.LEVEL_SHIFT
#: finite field, atomic units (E_h / (e a₀) = 51.422 V/Å)
FIELD_AU = 1e-3
#: α: a.u. (bohr³) → e·Å²/V
ALPHA_AU_TO_SI = BOHR ** 2 / HARTREE_EV
FIELD_AU_V_PER_A = HARTREE_EV / BOHR
#: Merz–Kollman points are rounded to this (Å) before the potential is evaluated
POINT_DECIMALS = 6

#: the analytic α check (a quarter of a label's cost) runs up to this cluster size
ANALYTIC_MAX_WATERS = 2

SETS = ("response", "smoke")
SMOKE_STRUCTURES = 2


# ======================================================================================
# small helpers
# ======================================================================================
def _check_set(set_name: str) -> None:
    if set_name not in SETS:
        raise ValueError(f"unknown set {set_name!r}; choose from {SETS}")


def label_dir(out: Path, set_name: str) -> Path:
    """Directory of the label shards of a set (``OUT/labels/response[_smoke]``).

    Example:
      >>> label_dir(Path("runs"), "smoke").as_posix()
      'runs/labels/response_smoke'
    """
    _check_set(set_name)
    return Path(out) / "labels" / ("response" if set_name == "response" else "response_smoke")


def alpha_iso_bohr3(alpha) -> float:
    """Isotropic polarisability tr α / 3 in bohr³ of a 3×3 α in e·Å²/V.

    Example:
      >>> round(alpha_iso_bohr3(np.eye(3) * 0.102908), 3)
      10.0
    """
    return float(np.trace(np.asarray(alpha, dtype=float))) / 3.0 / ALPHA_AU_TO_SI


# ======================================================================================
# stage 1: sampling (the main generator's, set "response" / its smoke set)
# ======================================================================================
def _sampling_set(set_name: str) -> str:
    return "response" if set_name == "response" else "smoke"


def run_sample(out: Path, set_name: str, seed: int) -> None:
    """GFN2-xTB sampling of the set's geometries (the main generator's stage 1)."""
    _check_set(set_name)
    wc.run_sample(Path(out), _sampling_set(set_name), seed, 1)


def load_samples(out: Path, set_name: str) -> list:
    """The sampled frames (ase.Atoms) of a set, in plan order."""
    _check_set(set_name)
    frames = wc.load_samples(Path(out), _sampling_set(set_name))
    return frames[:SMOKE_STRUCTURES] if set_name == "smoke" else frames


# ======================================================================================
# stage 2: labels with PySCF
# ======================================================================================
def build_mol(symbols, positions, basis: str = BASIS):
    """PySCF molecule (Å, neutral singlet), def2-SVPD unless told; ValueError for elements other than H, O."""
    return wc.build_mol(symbols, positions, basis)


def _new_mf(mol, template=None):
    from pyscf import dft
    mf = dft.RKS(mol).density_fit(auxbasis=AUXBASIS)
    mf.xc = LEVEL
    mf.grids.level = GRID_LEVEL
    mf.conv_tol = CONV_TOL
    mf.conv_tol_grad = CONV_TOL_GRAD
    if template is not None:                      # same grids and fitted integrals
        mf.grids = template.grids
        mf.with_df = template.with_df
    return mf


def dipole_integrals(mol) -> np.ndarray:
    """(3, nao, nao) ⟨μ|r|ν⟩ about the Cartesian origin (bohr)."""
    with mol.with_common_orig((0.0, 0.0, 0.0)):
        return mol.intor_symmetric("int1e_r", comp=3)


def run_scf(mol, field_au=None, *, template=None, dm0=None):
    """Converged RKS PBE (density fitted) in a uniform field (a.u., (3,) or None); None if it fails.

    The field adds ``F·r`` to the core Hamiltonian (electrons carry −e).  ``template``: a
    converged zero-field SCF whose grids and fitted integrals are reused; ``dm0``: start
    density (the zero-field one for the field SCFs).
    """
    mf = _new_mf(mol, template)
    if field_au is not None:
        h = mf.get_hcore(mol) + np.einsum("x,xij->ij", np.asarray(field_au, dtype=float), dipole_integrals(mol))
        mf.get_hcore = lambda *args, **kwargs: h
    return wc.converge(mf, dm0)


def dipole_au(mf) -> np.ndarray:
    """Dipole (3,) of nuclei + electrons about the origin, e·bohr."""
    return np.asarray(mf.dip_moment(mf.mol, mf.make_rdm1(), unit="AU", origin=(0.0, 0.0, 0.0), verbose=0))


def finite_field_polarizability(mf0, field_au: float = FIELD_AU):
    """Central-difference α (3, 3) in a.u. (bohr³) from six field SCFs, and their cycle counts.

    Column b is (μ(+F e_b) − μ(−F e_b)) / 2F; each field SCF starts from ``mf0``'s density.
    Returns (alpha, cycles) or (None, cycles) if a field SCF does not converge.
    """
    mol, dm0 = mf0.mol, mf0.make_rdm1()
    alpha = np.zeros((3, 3))
    cycles = []
    for b in range(3):
        mu = []
        for sign in (1.0, -1.0):
            f = np.zeros(3)
            f[b] = sign * field_au
            mf = run_scf(mol, f, template=mf0, dm0=dm0)
            if mf is None:
                return None, cycles
            cycles.append(int(getattr(mf, "cycles", -1)))
            mu.append(dipole_au(mf))
        alpha[:, b] = (mu[0] - mu[1]) / (2.0 * field_au)
    return alpha, cycles


def analytic_polarizability(mf) -> np.ndarray:
    """Static α (3, 3) in a.u. (bohr³) by coupled-perturbed Kohn–Sham on a converged RKS.

    Solves (ε_a − ε_i) U_ai + [v₁(U)]_ai = −⟨a|r_b|i⟩ for the field derivative U of the
    orbitals (the response kernel ``mf.gen_response`` includes Coulomb and the XC kernel on
    the SCF's grid) and returns α_ab = −tr(∂D/∂F_b r_a): the exact derivative of the SCF
    dipole that :func:`finite_field_polarizability` approximates.
    """
    from pyscf.scf import cphf
    mol = mf.mol
    occ = mf.mo_occ > 0
    orbo, orbv = mf.mo_coeff[:, occ], mf.mo_coeff[:, ~occ]
    r = dipole_integrals(mol)
    h1 = np.einsum("xpq,pa,qi->xai", r, orbv, orbo)
    vresp = mf.gen_response(hermi=1)

    def density(u):
        d = np.einsum("xai,pa,qi->xpq", u.reshape(-1, *h1.shape[1:]), orbv, 2.0 * orbo)
        return d + d.transpose(0, 2, 1)

    def fvind(u):
        return np.einsum("xpq,pa,qi->xai", vresp(density(u)), orbv, orbo).ravel()

    u, _ = cphf.solve(fvind, mf.mo_energy, mf.mo_occ, h1, max_cycle=100, tol=1e-10)
    return -np.einsum("apq,bpq->ab", r, density(np.asarray(u)))


def esp_points(symbols, positions) -> np.ndarray:
    """(M, 3) Merz–Kollman points (Å) of the main generator, rounded to 1e-6 Å."""
    return np.round(wc.mk_points(list(symbols), np.asarray(positions, dtype=float)), POINT_DECIMALS)


def label_structure(symbols, positions, *, field_au: float = FIELD_AU, analytic: bool = True) -> dict | None:
    """All labels of one structure (units of the header); None if an SCF does not converge.

    ``analytic``: also compute the analytic α for the ``alpha_analytic_deviation`` check
    (NaN when False).
    """
    timings = {}
    mol, mf0 = wc.scf_timed(symbols, positions, timings, basis=BASIS, scf=run_scf)
    if mf0 is None:
        return None
    with timed(timings, "field"):
        alpha_au, cycles = finite_field_polarizability(mf0, field_au)
    if alpha_au is None:
        return None
    deviation = float("nan")
    if analytic:
        with timed(timings, "cpks"):
            alpha_cpks = analytic_polarizability(mf0)
        deviation = float(np.abs(alpha_au - alpha_cpks).max() / (np.trace(alpha_cpks) / 3.0))
    with timed(timings, "esp"):
        pts = esp_points(symbols, positions)
        esp = wc.exact_potential(mol, mf0.make_rdm1(), pts) * HARTREE_EV          # Hartree/e → V
    return {
        "energy_hartree": float(mf0.e_tot),
        "energy": float(mf0.e_tot) * HARTREE_EV,
        "dipole": dipole_au(mf0) * BOHR,
        "polarizability": alpha_au * ALPHA_AU_TO_SI,
        "alpha_iso_bohr3": float(np.trace(alpha_au) / 3.0),
        "alpha_analytic_deviation": deviation,
        "esp_points": pts,
        "esp": esp,
        "scf_cycles": int(getattr(mf0, "cycles", -1)),
        "field_scf_cycles": np.array(cycles),
        "level_shifted": bool(mf0.level_shift),
        "timings": timings,
    }


def _label_one(d: Path, analytic_max_waters: int, frame) -> str:
    sid = frame.info["structure_id"]
    symbols = frame.get_chemical_symbols()
    analytic = int(frame.info["n_waters"]) <= analytic_max_waters
    r, t, wall = label_and_store(d, sid, functools.partial(label_structure, symbols, frame.get_positions(),
                                                           analytic=analytic),
                                 f"SCF not converged, also with level shift {LEVEL_SHIFT} Ha", n_atoms=len(symbols))
    if r is None:
        return f"{sid}: DROPPED (SCF not converged) after {wall:.1f} s"
    return (f"{sid}: {wall:.1f} s (scf {t['scf']:.1f}, fields {t['field']:.1f}, cpks {t.get('cpks', 0):.1f}, "
            f"esp {t['esp']:.1f}) E={r['energy_hartree']:.8f} Ha alpha_iso={r['alpha_iso_bohr3']:.3f} bohr^3 "
            f"(vs analytic {r['alpha_analytic_deviation']:.1e})")


def run_label(out: Path, set_name: str, seed: int, analytic_max_waters: int = ANALYTIC_MAX_WATERS) -> None:
    """Label every sampled structure not yet labelled or dropped (resumable), with progress.

    The analytic check of α runs for clusters of at most ``analytic_max_waters`` waters.
    The time left is extrapolated with a cost ∝ atoms² per structure.
    """
    d = label_dir(out, set_name)
    # a seeded shuffled order, so that a partial run covers all sizes
    label_stage(load_samples(out, set_name), d, set_name, functools.partial(_label_one, d, analytic_max_waters),
                order_seed=[seed, wc.SET_CODES[_sampling_set(set_name)], 998], cost=lambda f: len(f) ** 2)


# ======================================================================================
# stage 3: assemble
# ======================================================================================
def provenance(seed: int) -> dict:
    """Header keys of every assembled frame: level of theory, field, versions, seed."""
    info = {"level": LEVEL, "basis": BASIS, "auxbasis": AUXBASIS, "grid_level": GRID_LEVEL,
            "conv_tol": CONV_TOL, "conv_tol_grad": CONV_TOL_GRAD,
            "scf": "RKS, density fitted; retry with level shift 0.2 Ha",
            "polarizability_method": "central differences of the dipole, fields +-F along x, y, z",
            "field_au": FIELD_AU, "field_V_per_A": FIELD_AU * FIELD_AU_V_PER_A,
            "sampler": "GFN2-xTB (tblite) Langevin MD", "energy_unit": "eV", "dipole_unit": "e*A",
            "polarizability_unit": "e*A^2/V", "esp_unit": "V", "esp_points_unit": "A",
            "hartree_eV": HARTREE_EV, "bohr_A": BOHR, "seed": seed}
    for name, v in wc.package_versions().items():
        info[f"{name}_version"] = v
    return info


def assemble_frames(out: Path, set_name: str, seed: int, partial: bool = False) -> list:
    """Frames with labels attached; RuntimeError if a structure is neither labelled nor dropped
    (unless ``partial``: then it is left out)."""
    from ase.calculators.singlepoint import SinglePointCalculator
    prov = provenance(seed)
    result = []
    for f, lab in labelled(load_samples(out, set_name), label_dir(out, set_name), set_name, partial=partial):
        f.info["set"] = set_name
        f.info.update(prov)
        f.info.update(charge=0, energy_hartree=float(lab["energy_hartree"]),
                      alpha_iso_bohr3=float(lab["alpha_iso_bohr3"]),
                      alpha_analytic_deviation=float(lab["alpha_analytic_deviation"]),
                      polarizability=np.asarray(lab["polarizability"]).reshape(3, 3),
                      esp_points=np.asarray(lab["esp_points"]).reshape(-1, 3), esp=np.asarray(lab["esp"]))
        f.calc = SinglePointCalculator(f, energy=float(lab["energy"]), dipole=lab["dipole"])
        result.append(f)
    return result


def run_assemble(out: Path, set_name: str, seed: int, dest: Path | None = None, partial: bool = False) -> Path:
    """Write the assembled set (gzipped extended XYZ, atomically) and return its path."""
    return write_assembled(out, set_name, assemble_frames(out, set_name, seed, partial), dest)


# ======================================================================================
# command line
# ======================================================================================
def main(argv=None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    p = stage_parser("jaxlr.data.generate.water_response",
                     "Generate the PBE/def2-SVPD water response set (see the module docstring).",
                     out="runs/response", sets=SETS, default_set="response")
    p.add_argument("--analytic-max-waters", type=int, default=ANALYTIC_MAX_WATERS,
                   help="run the analytic check of alpha for clusters up to this size")
    a = p.parse_args(argv)
    return run_stages(a, lambda: run_sample(a.out, a.set_name, a.seed),
                      lambda: run_label(a.out, a.set_name, a.seed, a.analytic_max_waters),
                      lambda: run_assemble(a.out, a.set_name, a.seed, a.dest, a.partial))


if __name__ == "__main__":
    sys.exit(main())
