"""Reference data for water clusters (H2O)n: PBE/def2-SVP energies, forces, dipoles, Hirshfeld
charges and dipoles, and density coefficients in a small s+p Gaussian basis.

Run (staged, resumable, deterministic for a given seed)::

    python -m jaxlr.data.generate.water_clusters {sample,label,assemble,all} \\
        --out runs/water --set {water_clusters,transfer,smoke} --workers 1 --seed 0

(or ``python jaxlr/data/generate/water_clusters.py ...``).  Every stage writes small shard
files under ``OUT`` (``OUT/samples/SET/traj_*.extxyz``, ``OUT/labels/SET/*.npz``), each
written to a temporary name and renamed when complete, so a killed run resumes where it
stopped: rerun the same command.  Structures dropped by the labelling stage are recorded in
``OUT/labels/SET/dropped.jsonl`` (and a ``*.dropped.json`` marker so they are not retried).
Use ``OMP_NUM_THREADS=1`` (and ``nice``) on shared machines: one worker is one core.

Stage 1, sample (GFN2-xTB through tblite's ASE calculator)
-----------------------------------------------------------
For each trajectory: n waters placed one by one at random (each new oxygen 2.7–3.3 Å from
a random earlier oxygen, random orientation, rejected if any intermolecular O–O < 2.5 Å or
any intermolecular atom pair < 1.5 Å) → relaxed loosely (ASE BFGS, fmax 0.2 eV/Å, ≤ 200
steps) → Langevin MD (ASE ``Langevin``, 0.5 fs, friction 0.01/fs, centre of mass fixed by ``FixCom``) at 200, 300 or 450 K
(cycled over the trajectories of each size), Maxwell–Boltzmann start, 100 fs of
equilibration, then a snapshot every 100 steps (50 fs).  About 10 % of the snapshots
(Bernoulli(0.1) per snapshot) get every Cartesian coordinate displaced by a Gaussian of
standard deviation 0.05 Å ("rattled").  Random numbers: one ``numpy`` generator per
trajectory from ``SeedSequence([seed, set code, trajectory index])``.

Stage 2, label (PySCF; level of theory fixed)
----------------------------------------------
RKS PBE/def2-SVP, ``dft.RKS(mol).density_fit(auxbasis="def2-universal-jkfit")``,
``xc="PBE"``, grids level 3, ``conv_tol=1e-9``; a structure whose SCF does not converge is
retried once from its last density with a 0.2 Ha level shift, then dropped (logged).

* ``energy``: total energy, eV (1 Ha = 27.211386245988 eV).
* ``forces``: −gradient (``mf.nuc_grad_method()``), eV/Å (bohr = 0.529177210903 Å).
* ``dipole``: physical dipole of the whole charge density (nuclei minus electrons) about the
  Cartesian origin, e·Å: ``mf.dip_moment(unit="AU", origin=(0, 0, 0)) × bohr``.
* ``hirshfeld_charges`` (e) and ``hirshfeld_dipoles`` (e·Å): Hirshfeld partition of the
  SCF density on the SCF's own grid; the promolecule is made of spherically averaged free
  atoms at PBE/def2-SVP (PySCF ``scf.atom_ks.get_atm_nrks``, fractional occupations).
  ``q_A = Z_A − ∫ w_A ρ``, ``μ_A = −∫ w_A ρ (r − R_A)`` (the atom's own nucleus adds no
  dipole about R_A).  Grid error: Σ q_A ≈ 1e-5 e.
* ``coefficients`` (N, 10) and ``esp_rmse`` (below).

Density coefficients: convention
--------------------------------
Basis (jaxlr ``GaussianBasis`` conventions, widths σ in Å, narrowest first)::

    O: s widths 0.05, 0.25, 0.45, 0.7          p widths 0.25, 0.5
    H: s widths 0.25, 0.45, 0.7                 p width  0.35

(``BASIS_WIDTHS`` below; chosen on a PBE water dimer among a few candidates: ESP error
1.1 mHa/e against an ESP of 20 mHa/e rms on the MK shells — sets with a width ≥ 1.2 Å gave
4–16 mHa/e and atomic charges of ±2–5 e, the Coulomb metric then being nearly singular).  s function ``g_σ(r) = (2πσ²)^(−3/2) exp(−r²/2σ²)`` carries unit
charge, p function ``p_σ,α = −∂_α g_σ`` unit dipole along α.  Per-atom layout (padded to
the largest counts, n_basis = 4 + 3·2 = 10, unused slots exactly 0):
``[c_s1, c_s2, c_s3, c_s4, μ_1x, μ_1y, μ_1z, μ_2x, μ_2y, μ_2z]`` — for H, ``c_s4`` and the
second p triple are padding.  s coefficients are charges (e), p coefficients dipoles (e·Å).

The coefficients describe the TOTAL charge density (nuclei + electrons):

1. the electron charge density −ρ_e is fitted in the Coulomb metric,
   ``min (−ρ_e − ρ̃ | −ρ_e − ρ̃)``, with two sets of equality constraints solved exactly
   through the KKT system: the fitted electron charge is −N_e, and the fitted dipole of
   the total density (nuclei included) equals the PBE dipole (to ~1e-12 e·Å);
2. each nucleus' charge Z_i is then ADDED TO THE COEFFICIENT OF ITS ATOM'S NARROWEST s
   FUNCTION (slot 0: σ = 0.05 Å for O, 0.25 Å for H) — the nucleus is represented by that
   Gaussian, which leaves charge and dipole unchanged and changes the potential by less
   than 1e-8 of Z/r beyond 6σ (0.3 Å for O, 1.5 Å for H).

Hence ``q_i = Σ_s c_{i,s}`` are atomic charges with ``Σ_i q_i = 0`` (the cluster's charge)
and ``Σ_i q_i R_i + μ_i`` is the PBE dipole, as in jaxlr's density model.

Fit quality ``esp_rmse`` (mHa/e): RMS difference between the electrostatic potential of
the fitted density (coefficients as stored) and the exact PBE potential (point nuclei +
``int1e_grids`` contracted with the density matrix) on Merz–Kollman shells at 1.4, 1.6,
1.8, 2.0 × vdW radius (H 1.2 Å, O 1.4 Å), ≈1 point/Å² (Fibonacci spheres), points inside
any atom's scaled sphere removed.

Stage 3, assemble
-----------------
A gzipped extended-XYZ file (``ase.io.read(path, ":")``).  Per frame: ``energy``,
``forces``, ``dipole`` (as ASE calculator results), arrays ``coefficients``,
``hirshfeld_charges``, ``hirshfeld_dipoles``, info ``charge`` (0), ``esp_rmse``,
``n_waters``, sampling provenance (``temperature_K``, ``trajectory``, ``snapshot``,
``md_time_fs``, ``rattled``, ``seed``, ``structure_id``; a seed other than 0 appends
``-seed<k>`` to the id, so sets of different seeds can be pooled) and label provenance
(level, basis, auxbasis, grid level, conv_tol, package versions, basis widths).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path

import numpy as np

if not __package__:                     # run as a file: import its siblings as the package "generate"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "generate"
from ._shards import (  # noqa: E402
    installed_versions,
    label_and_store,
    label_dir,
    label_stage,
    labelled,
    random_rotation,
    run_stages,
    sample_stage,
    snapshot_steps,
    stage_parser,
    timed,
    write_assembled,
    write_extxyz,  # noqa: F401  (part of this module's interface)
)
from ._shards import load_samples as load_shards  # noqa: E402

# --------------------------------------------------------------------------------------
# jaxlr internals used by this generator: NONE (only the shard machinery of its sibling
# _shards.py, which imports numpy alone).  The basis widths and conventions of
# jaxlr.density.GaussianBasis are restated below (BASIS_WIDTHS, layout in the header), so
# the package can be reorganised without touching this file.
# --------------------------------------------------------------------------------------

HARTREE_EV = 27.211386245988        # eV per Hartree
BOHR = 0.529177210903               # Å per bohr

LEVEL = "PBE"
BASIS = "def2-svp"
AUXBASIS = "def2-universal-jkfit"
GRID_LEVEL = 3
CONV_TOL = 1e-9
LEVEL_SHIFT = 0.2

#: density-fit basis, per element: (s widths, p widths) in Å, narrowest first
BASIS_WIDTHS = {
    "O": ((0.05, 0.25, 0.45, 0.7), (0.25, 0.5)),
    "H": ((0.25, 0.45, 0.7), (0.35,)),
}
N_S = max(len(s) for s, _ in BASIS_WIDTHS.values())
N_P = max(len(p) for _, p in BASIS_WIDTHS.values())
N_BASIS = N_S + 3 * N_P
Z_OF = {"H": 1, "O": 8}

#: Merz–Kollman radii (Å) and shell factors, point density (1/Å²)
MK_RADII = {"H": 1.2, "O": 1.4}
MK_SHELLS = (1.4, 1.6, 1.8, 2.0)
MK_DENSITY = 1.0

TEMPERATURES = (200.0, 300.0, 450.0)
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.01
RATTLE_FRACTION = 0.1
RATTLE_STDEV = 0.05
SET_CODES = {"water_clusters": 1, "transfer": 2, "smoke": 3, "response": 4}
#: the packages whose versions go into the provenance (``pyscf_version``, ...)
PACKAGES = ("pyscf", "tblite", "ase", "numpy")

#: GFN2-like water monomer (Å), O first
WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])


# ======================================================================================
# the plan: which trajectories make up each set
# ======================================================================================
@dataclasses.dataclass(frozen=True)
class Trajectory:
    index: int
    n_waters: int
    temperature: float
    n_snapshots: int
    equilibration_steps: int = 200      # 100 fs
    interval_steps: int = 100           # 50 fs between snapshots
    rattle: bool = True                 # Bernoulli(RATTLE_FRACTION) per snapshot
    force_rattle_last: bool = False     # smoke set: exercise the rattle path deterministically


#: structures per cluster size of the main set: 500, 86 % with n = 2–6.  Measured cost of a
#: label (SCF + gradient + fit + Hirshfeld, one core) ≈ 1/3.3/8/14/25/39/55/68 s for
#: n = 1…8, so ≈ 7,700 core-s (2.1 h) in all, mean ≈ 15 s
WATER_CLUSTER_COUNTS = {1: 40, 2: 110, 3: 120, 4: 100, 5: 60, 6: 40, 7: 18, 8: 12}
SNAPSHOTS_PER_TRAJECTORY = 5
#: size-transfer set: ≈ 180 s (n = 12) and ≈ 360 s (n = 16) per label, ≈ 1.5 h in all
TRANSFER_COUNTS = {12: 10, 16: 10}
TRANSFER_SNAPSHOTS = 2
#: test-only response set (labelled at PBE/def2-SVPD by :mod:`water_response`): 5 clusters per
#: size, one snapshot per trajectory (temperatures cycled), so no two share a trajectory
RESPONSE_COUNTS = {n: 5 for n in range(1, 7)}
RESPONSE_SNAPSHOTS = 1


def plan(set_name: str) -> list[Trajectory]:
    """The trajectories of a set (deterministic)."""
    trajs: list[Trajectory] = []
    if set_name == "water_clusters":
        counts, per = WATER_CLUSTER_COUNTS, SNAPSHOTS_PER_TRAJECTORY
    elif set_name == "transfer":
        counts, per = TRANSFER_COUNTS, TRANSFER_SNAPSHOTS
    elif set_name == "response":
        counts, per = RESPONSE_COUNTS, RESPONSE_SNAPSHOTS
    elif set_name == "smoke":
        for k, n in enumerate((1, 2, 2)):
            trajs.append(Trajectory(k, n, 300.0, 1, equilibration_steps=20, interval_steps=10, rattle=False,
                                    force_rattle_last=(k == 2)))
        return trajs
    else:
        raise ValueError(f"unknown set {set_name!r}; choose from {sorted(SET_CODES)}")
    for n, count in counts.items():
        n_traj = math.ceil(count / per)
        for t in range(n_traj):
            snaps = min(per, count - t * per)
            trajs.append(Trajectory(len(trajs), n, TEMPERATURES[t % len(TEMPERATURES)], snaps))
    return trajs


def structure_id(set_name: str, traj: Trajectory, snap: int) -> str:
    return f"{set_name}-n{traj.n_waters:02d}-t{traj.index:04d}-s{snap:02d}"


# ======================================================================================
# small helpers
# ======================================================================================
def package_versions() -> dict:
    """Versions of the packages the generator uses, ``{name: version or "absent"}``.

    Example:
      >>> sorted(package_versions())
      ['ase', 'numpy', 'pyscf', 'tblite']
    """
    return installed_versions(PACKAGES)


def check_elements(symbols) -> None:
    """Raise ValueError for an element outside the density-fit basis."""
    bad = sorted(set(symbols) - set(BASIS_WIDTHS))
    if bad:
        raise ValueError(f"element(s) {bad} are outside the density-fit basis, which covers only "
                         f"{sorted(BASIS_WIDTHS)}; add widths for them to BASIS_WIDTHS.")


# ======================================================================================
# stage 1: sampling with GFN2-xTB
# ======================================================================================
def random_cluster(n: int, rng) -> np.ndarray:
    """(3n, 3) positions (Å), O H H per water, non-clashing, compact."""
    mols = [WATER @ random_rotation(rng).T]
    while len(mols) < n:
        for _attempt in range(1000):
            anchor = mols[rng.integers(len(mols))][0]
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            o = anchor + rng.uniform(2.7, 3.3) * direction
            new = (WATER - WATER[0]) @ random_rotation(rng).T + o
            others = np.concatenate(mols)
            oo = np.linalg.norm(np.array([m[0] for m in mols]) - o, axis=1)
            d = np.linalg.norm(others[:, None, :] - new[None, :, :], axis=-1)
            if oo.min() >= 2.5 and d.min() >= 1.5:
                mols.append(new)
                break
        else:
            raise RuntimeError(f"could not place water {len(mols) + 1} of {n}")
    pos = np.concatenate(mols)
    return pos - pos.mean(axis=0)


def sample_trajectory(set_name: str, traj: Trajectory, seed: int) -> list:
    """Snapshots (ase.Atoms with provenance in .info) of one trajectory."""
    import warnings

    from ase import Atoms, units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    rng = np.random.default_rng(np.random.SeedSequence([seed, SET_CODES[set_name], traj.index]))
    atoms = Atoms("OH2" * traj.n_waters, positions=random_cluster(traj.n_waters, rng))
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    BFGS(atoms, logfile=None).run(fmax=0.2, steps=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=traj.temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep=TIMESTEP_FS * units.fs, temperature_K=traj.temperature,
                   friction=FRICTION_PER_FS / units.fs, rng=rng, fixcm=False)
    frames = []
    for snap, step in snapshot_steps(traj, dyn.run):
        frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.get_positions().copy())
        rattled = bool(rng.random() < RATTLE_FRACTION) if traj.rattle else False
        if traj.force_rattle_last and snap == traj.n_snapshots - 1:
            rattled = True
        if rattled:
            frame.positions += rng.normal(scale=RATTLE_STDEV, size=frame.positions.shape)
        frame.info.update(structure_id=structure_id(set_name, traj, snap), set=set_name, n_waters=traj.n_waters,
                          temperature_K=traj.temperature, trajectory=traj.index, snapshot=snap,
                          md_time_fs=step * TIMESTEP_FS, rattled=rattled, seed=seed,
                          xtb_energy_eV=float(atoms.get_potential_energy()))
        frames.append(frame)
    return frames


def run_sample(out: Path, set_name: str, seed: int, workers: int = 1) -> None:
    """Stage 1: write the missing trajectory shards ``OUT/samples/SET/traj_*.extxyz``."""
    sample_stage(out, set_name, plan(set_name), functools.partial(sample_trajectory, set_name, seed=seed),
                 workers=workers)


def load_samples(out: Path, set_name: str) -> list:
    """All sampled frames (``ase.Atoms``) of a set, in plan order (FileNotFoundError if a shard is missing)."""
    return load_shards(out, set_name, plan(set_name))


# ======================================================================================
# stage 2: labels with PySCF
# ======================================================================================
def build_mol(symbols, positions, basis: str = BASIS):
    """PySCF molecule (positions in Å, neutral singlet) in ``basis`` (def2-SVP unless told).

    Raises:
      ValueError: an element outside the density-fit basis (:func:`check_elements`).
    """
    from pyscf import gto
    check_elements(symbols)
    return gto.M(atom=[(s, tuple(map(float, r))) for s, r in zip(symbols, positions)], basis=basis,
                 unit="Angstrom", charge=0, spin=0, verbose=0)


def run_scf(mol):
    """Converged PBE/def2-SVP RKS (density fitted); None if it fails even with a level shift."""
    from pyscf import dft
    mf = dft.RKS(mol).density_fit(auxbasis=AUXBASIS)
    mf.xc = LEVEL
    mf.grids.level = GRID_LEVEL
    mf.conv_tol = CONV_TOL
    return converge(mf)


def converge(mf, dm0=None):
    """Run the SCF ``mf`` (from the density ``dm0``, or PySCF's guess); if it does not converge,
    retry once from its last density with a :data:`LEVEL_SHIFT` Ha level shift.

    Returns:
      ``mf`` when converged, else None.
    """
    mf.kernel(dm0=dm0)
    if not mf.converged:
        dm = mf.make_rdm1()
        mf.level_shift = LEVEL_SHIFT
        mf.kernel(dm0=dm)
        if not mf.converged:
            return None
    return mf


def scf_timed(symbols, positions, timings: dict, *, basis: str = BASIS, scf=None):
    """The molecule and its converged SCF, the SCF's wall time (s) added to ``timings["scf"]``.

    Args:
      symbols, positions: the structure (Å).
      timings: the label's timings (updated).
      basis: the orbital basis (:func:`build_mol`).
      scf: ``scf(mol)`` → converged mean-field object or None (default :func:`run_scf`).

    Returns:
      ``(mol, mf)``; ``mf`` is None when the SCF did not converge.
    """
    mol = build_mol(symbols, positions, basis)
    with timed(timings, "scf"):
        return mol, (scf or run_scf)(mol)


# --- density fit in the jaxlr s+p basis -----------------------------------------------
def aux_basis_dict() -> dict:
    """PySCF auxiliary basis: uncontracted s and p shells with the jaxlr functions' exponents."""
    aux = {}
    for el, (s_w, p_w) in BASIS_WIDTHS.items():
        shells = [[0, [1.0 / (2.0 * (w / BOHR) ** 2), 1.0]] for w in s_w]
        shells += [[1, [1.0 / (2.0 * (w / BOHR) ** 2), 1.0]] for w in p_w]
        aux[el] = shells
    return aux


def aux_layout(auxmol):
    """For every auxiliary function: (atom, jaxlr slot, kind 's'/'p', Cartesian direction, n_k).

    ``n_k``: PySCF's normalised function χ_k = n_k b_k, b_k the jaxlr function (unit charge
    for s, unit dipole for p): n_k is the charge (s) or the dipole (p) of χ_k in a.u.
    PySCF normalises s and p shells with the radial factor ``gto_norm`` times the angular
    factors 1/√(4π) and √(3/(4π)) (libcint's convention for l ≤ 1).
    """
    from pyscf import gto
    atoms, slots, is_p, direction, norm = [], [], [], [], []
    for shell in range(auxmol.nbas):
        atom, ang = auxmol.bas_atom(shell), auxmol.bas_angular(shell)
        alpha = float(auxmol.bas_exp(shell)[0])
        coef = float(auxmol._libcint_ctr_coeff(shell)[0, 0])     # includes gto_norm
        el = auxmol.atom_pure_symbol(atom)
        s_w, p_w = BASIS_WIDTHS[el]
        width = BOHR / math.sqrt(2.0 * alpha)
        if ang == 0:
            k = int(np.argmin(np.abs(np.array(s_w) - width)))
            n = coef / math.sqrt(4 * math.pi) * (math.pi / alpha) ** 1.5
            atoms.append(atom), slots.append(k), is_p.append(False), direction.append(-1), norm.append(n)
        elif ang == 1:
            k = int(np.argmin(np.abs(np.array(p_w) - width)))
            n = coef * math.sqrt(3 / (4 * math.pi)) * (math.pi / alpha) ** 1.5 / (2 * alpha)
            for m in range(3):                                         # PySCF p order: x, y, z
                atoms.append(atom), slots.append(N_S + 3 * k + m), is_p.append(True), direction.append(m)
                norm.append(n)
        else:
            raise AssertionError("only s and p shells")
        assert abs((s_w if ang == 0 else p_w)[k] - width) < 1e-9 * width
    del gto
    return np.array(atoms), np.array(slots), np.array(is_p), np.array(direction), np.array(norm)


def fit_density(mol, dm, dipole_au, *, constrain_dipole=True):
    """Coulomb-metric fit of the SCF density in the jaxlr basis, charge and dipole exact.

    Returns (coefficients (N, N_BASIS) of the total charge density in jaxlr units, e and e·Å
    (nuclei added to slot 0, see the header), diagnostics).
    """
    from pyscf import df, lib
    check_elements([mol.atom_pure_symbol(i) for i in range(mol.natm)])
    auxmol = df.addons.make_auxmol(mol, aux_basis_dict())
    atom, slot, is_p, direction, norm = aux_layout(auxmol)
    metric = auxmol.intor("int2c2e")
    # v_k = (χ_k | ρ_e), in blocks of auxiliary shells (memory)
    dm_tril = lib.pack_tril(dm + dm.T - np.diag(np.diag(dm)))
    v = np.empty(auxmol.nao)
    loc = auxmol.ao_loc
    step = 8
    for s0 in range(0, auxmol.nbas, step):
        s1 = min(auxmol.nbas, s0 + step)
        ints = df.incore.aux_e2(mol, auxmol, intor="int3c2e", aosym="s2ij",
                                shls_slice=(0, mol.nbas, 0, mol.nbas, s0, s1))
        v[loc[s0]:loc[s1]] = dm_tril @ ints
    coords = mol.atom_coords(unit="Bohr")
    charges = mol.atom_charges().astype(float)
    # constraints on d (−ρ_e ≈ Σ d_k χ_k): charge −N_e; dipole of the total density
    rows = [np.where(is_p, 0.0, norm)]
    rhs = [-float(mol.nelectron)]
    if constrain_dipole:
        for a in range(3):
            rows.append(np.where(is_p, norm * (direction == a), norm * coords[atom, a]))
            rhs.append(float(dipole_au[a]) - float(charges @ coords[:, a]))
    A, b = np.array(rows), np.array(rhs)
    m = len(b)
    kkt = np.zeros((len(v) + m, len(v) + m))
    kkt[:len(v), :len(v)] = metric
    kkt[:len(v), len(v):] = A.T
    kkt[len(v):, :len(v)] = A
    target = np.concatenate([-v, b])
    x = np.linalg.solve(kkt, target)
    for _ in range(2):                                   # iterative refinement
        x += np.linalg.solve(kkt, target - kkt @ x)
    d = x[:len(v)]
    coef = np.zeros((mol.natm, N_BASIS))
    val = norm * d
    val = np.where(is_p, val * BOHR, val)                # dipoles e·bohr → e·Å
    coef[atom, slot] = val
    coef[:, 0] += charges                                # nuclei into the narrowest s function
    unconstrained = np.linalg.solve(metric, -v)
    diag = {"constraint_residual": float(np.abs(A @ d - b).max()),
            "electrons_unconstrained": -float(np.where(is_p, 0.0, norm) @ unconstrained),
            "n_aux": int(auxmol.nao)}
    return coef, diag


def coefficient_moments(symbols, positions, coef):
    """Atomic charges (N,), atomic dipoles (N, 3), total dipole (3,) of jaxlr coefficients (Å units)."""
    q = coef[:, :N_S].sum(axis=1)
    mu = coef[:, N_S:].reshape(len(symbols), N_P, 3).sum(axis=1)
    return q, mu, q @ np.asarray(positions) + mu.sum(axis=0)


def widths_per_atom(symbols):
    s = np.ones((len(symbols), N_S))
    p = np.ones((len(symbols), N_P))
    for i, el in enumerate(symbols):
        s_w, p_w = BASIS_WIDTHS[el]
        s[i, :len(s_w)] = s_w
        p[i, :len(p_w)] = p_w
    return s, p


def fitted_potential(symbols, positions, coef, points):
    """Potential (e/Å) at points (Å) of the Gaussian density given by jaxlr coefficients."""
    from scipy.special import erf
    positions = np.asarray(positions)
    s_w, p_w = widths_per_atom(symbols)
    d = points[:, None, :] - positions[None, :, :]                   # (G, N, 3)
    r = np.linalg.norm(d, axis=-1)                                   # (G, N)
    phi = np.zeros(len(points))
    for k in range(N_S):
        a = 1.0 / (math.sqrt(2.0) * s_w[:, k])
        phi += (coef[:, k] * erf(a * r) / r).sum(axis=1)
    for k in range(N_P):
        a = 1.0 / (math.sqrt(2.0) * p_w[:, k])
        radial = erf(a * r) / r ** 3 - 2 * a / math.sqrt(math.pi) * np.exp(-(a * r) ** 2) / r ** 2
        mu = coef[:, N_S + 3 * k:N_S + 3 * k + 3]                    # (N, 3)
        phi += ((d * mu[None]).sum(-1) * radial).sum(axis=1)
    return phi


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    rho = np.sqrt(1 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def mk_points(symbols, positions) -> np.ndarray:
    """Merz–Kollman points (Å): shells at MK_SHELLS × vdW radius, points inside any atom's
    scaled sphere removed."""
    positions = np.asarray(positions)
    radii = np.array([MK_RADII[s] for s in symbols])
    pts = []
    for f in MK_SHELLS:
        for i, r in enumerate(radii):
            n = max(8, int(round(4 * math.pi * (f * r) ** 2 * MK_DENSITY)))
            cand = positions[i] + f * r * _fibonacci_sphere(n)
            dist = np.linalg.norm(cand[:, None, :] - positions[None], axis=-1)
            keep = (dist >= f * radii[None, :] - 1e-9).all(axis=1)
            pts.append(cand[keep])
    return np.concatenate(pts)


def exact_potential(mol, dm, points_ang) -> np.ndarray:
    """Exact potential (Hartree/e) of nuclei + SCF electrons at points (Å)."""
    pts = np.asarray(points_ang) / BOHR
    coords = mol.atom_coords(unit="Bohr")
    z = mol.atom_charges()
    nuc = (z[None, :] / np.linalg.norm(pts[:, None] - coords[None], axis=-1)).sum(axis=1)
    ele = np.empty(len(pts))
    for g0 in range(0, len(pts), 128):
        ints = mol.intor("int1e_grids", grids=pts[g0:g0 + 128])
        ele[g0:g0 + 128] = np.einsum("gij,ij->g", ints, dm)
    return nuc - ele


# --- Hirshfeld -------------------------------------------------------------------------
_FREE_ATOMS: dict = {}


def _free_atom_profile(symbol: str):
    """(r grid in bohr, spherically averaged PBE/def2-SVP free-atom density) — cached."""
    if symbol not in _FREE_ATOMS:
        from pyscf import dft, gto
        from pyscf.scf import atom_ks
        atm = gto.M(atom=[(symbol, (0.0, 0.0, 0.0))], basis=BASIS, spin=Z_OF[symbol] % 2, verbose=0)
        _, _, mo_c, mo_occ = atom_ks.get_atm_nrks(atm, xc=LEVEL)[symbol]
        dm = (mo_c * mo_occ) @ mo_c.T
        r = np.concatenate([[0.0], np.geomspace(1e-5, 40.0, 4000)])
        dirs = _fibonacci_sphere(26)
        rho = np.zeros_like(r)
        for u in dirs:
            ao = dft.numint.eval_ao(atm, r[:, None] * u[None])
            rho += dft.numint.eval_rho(atm, ao, dm)
        _FREE_ATOMS[symbol] = (r, rho / len(dirs))
    return _FREE_ATOMS[symbol]


def hirshfeld(mf, dm):
    """Hirshfeld charges (e) and atomic dipoles (e·Å) on the SCF grid."""
    from pyscf import dft
    mol = mf.mol
    coords = mol.atom_coords(unit="Bohr")
    symbols = [mol.atom_pure_symbol(i) for i in range(mol.natm)]
    profiles = [_free_atom_profile(s) for s in symbols]
    pop = np.zeros(mol.natm)
    dip = np.zeros((mol.natm, 3))
    ni = dft.numint.NumInt()
    for ao, mask, weight, pts in ni.block_loop(mol, mf.grids, mol.nao, deriv=0, max_memory=500):
        rho = ni.eval_rho(mol, ao, dm, mask, "LDA") * weight
        rel = pts[:, None, :] - coords[None]                     # (G, N, 3)
        dist = np.linalg.norm(rel, axis=-1)
        free = np.stack([np.interp(dist[:, i], *profiles[i], right=0.0) for i in range(mol.natm)], axis=1)
        tot = free.sum(axis=1)
        w = np.divide(free, tot[:, None], out=np.zeros_like(free), where=tot[:, None] > 1e-30)
        pop += rho @ w
        dip -= np.einsum("g,gn,gnk->nk", rho, w, rel)
    return mol.atom_charges() - pop, dip * BOHR


# --- one structure ---------------------------------------------------------------------
def label_structure(symbols, positions) -> dict | None:
    """All labels of one structure (eV, Å units); None if the SCF does not converge."""
    symbols = list(symbols)
    positions = np.asarray(positions, dtype=float)
    timings = {}
    mol, mf = scf_timed(symbols, positions, timings)
    if mf is None:
        return None
    with timed(timings, "grad"):
        grad = mf.nuc_grad_method().kernel()
    with timed(timings, "fit"):
        dm = mf.make_rdm1()
        dip_au = np.asarray(mf.dip_moment(mol, dm, unit="AU", origin=(0.0, 0.0, 0.0), verbose=0))
        coef, fit_diag = fit_density(mol, dm, dip_au)
        pts = mk_points(symbols, positions)
        v_exact = exact_potential(mol, dm, pts)
        v_fit = fitted_potential(symbols, positions, coef, pts) * BOHR      # e/Å → Hartree/e
        esp_rmse = 1000.0 * float(np.sqrt(np.mean((v_fit - v_exact) ** 2)))
    with timed(timings, "hirshfeld"):
        hq, hmu = hirshfeld(mf, dm)
    return {
        "energy_hartree": float(mf.e_tot),
        "energy": float(mf.e_tot) * HARTREE_EV,
        "forces": -np.asarray(grad) * HARTREE_EV / BOHR,
        "dipole": dip_au * BOHR,
        "coefficients": coef,
        "esp_rmse": esp_rmse,
        "n_esp_points": len(pts),
        "hirshfeld_charges": hq,
        "hirshfeld_dipoles": hmu,
        "scf_cycles": int(getattr(mf, "cycles", -1)),
        "level_shifted": bool(mf.level_shift),
        "constraint_residual": fit_diag["constraint_residual"],
        "timings": timings,
    }


def _label_one(d: Path, frame) -> str:
    sid = frame.info["structure_id"]
    symbols = frame.get_chemical_symbols()
    r, t, wall = label_and_store(d, sid, functools.partial(label_structure, symbols, frame.get_positions()),
                                 f"SCF not converged, also with level shift {LEVEL_SHIFT} Ha", n_atoms=len(symbols))
    if r is None:
        return f"{sid}: DROPPED (SCF not converged) after {wall:.1f} s"
    return (f"{sid}: {wall:.1f} s (scf {t['scf']:.1f} [{r['scf_cycles']} cycles"
            f"{', level-shifted' if r['level_shifted'] else ''}], grad {t['grad']:.1f}, "
            f"fit+esp {t['fit']:.1f}, hirshfeld {t['hirshfeld']:.1f}) E={r['energy_hartree']:.8f} Ha "
            f"esp_rmse={r['esp_rmse']:.3f} mHa/e")


def run_label(out: Path, set_name: str, seed: int, workers: int = 1) -> None:
    """Stage 2: label every sampled structure not labelled or dropped yet (seeded shuffled order)."""
    d = label_dir(out, set_name)
    label_stage(load_samples(out, set_name), d, set_name, functools.partial(_label_one, d),
                order_seed=[seed, SET_CODES[set_name], 999], workers=workers)


# ======================================================================================
# stage 3: assemble
# ======================================================================================
def provenance(seed: int) -> dict:
    info = {"level": LEVEL, "basis": BASIS, "auxbasis": AUXBASIS, "grid_level": GRID_LEVEL,
            "conv_tol": CONV_TOL, "scf": "RKS, density fitted; retry with level shift 0.2 Ha",
            "sampler": "GFN2-xTB (tblite) Langevin MD", "timestep_fs": TIMESTEP_FS,
            "friction_per_fs": FRICTION_PER_FS, "rattle_stdev_A": RATTLE_STDEV,
            "coefficient_convention": "total charge density; nucleus added to slot 0 (narrowest s)",
            "energy_unit": "eV", "hartree_eV": HARTREE_EV, "bohr_A": BOHR, "seed": seed}
    for name, v in package_versions().items():
        info[f"{name}_version"] = v
    for el, (s_w, p_w) in BASIS_WIDTHS.items():
        info[f"widths_{el}_s"] = np.array(s_w)
        info[f"widths_{el}_p"] = np.array(p_w)
    return info


def assemble_frames(out: Path, set_name: str, seed: int, partial: bool = False) -> list:
    """The labelled frames of a set with their labels and provenance attached (plan order).

    Raises:
      RuntimeError: structures neither labelled nor dropped, unless ``partial``.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    prov = provenance(seed)
    result = []
    for f, lab in labelled(load_samples(out, set_name), label_dir(out, set_name), set_name, partial=partial):
        f.info.update(prov)
        if seed:                     # sets of other seeds reuse the plan's names: keep ids unique
            f.info["structure_id"] = f"{f.info['structure_id']}-seed{seed}"
        f.info.update(charge=0, esp_rmse=float(lab["esp_rmse"]), energy_hartree=float(lab["energy_hartree"]))
        f.arrays["coefficients"] = lab["coefficients"]
        f.arrays["hirshfeld_charges"] = lab["hirshfeld_charges"]
        f.arrays["hirshfeld_dipoles"] = lab["hirshfeld_dipoles"]
        f.calc = SinglePointCalculator(f, energy=float(lab["energy"]), forces=lab["forces"], dipole=lab["dipole"])
        result.append(f)
    return result


def run_assemble(out: Path, set_name: str, seed: int, dest: Path | None = None, partial: bool = False) -> Path:
    """Stage 3: write the assembled file (default ``OUT/SET.extxyz.gz``); returns its path."""
    return write_assembled(out, set_name, assemble_frames(out, set_name, seed, partial), dest)


#: per-frame targets available in an assembled file
TARGETS = ("energy", "forces", "dipole", "coefficients", "hirshfeld_charges", "hirshfeld_dipoles", "esp_rmse",
           "n_waters", "charge")


def read_dataset(path, targets=("energy", "forces")):
    """Read an assembled file: (frames, {target: list of per-frame values}).

    Raises KeyError naming the file, frame and target when a requested target is absent.
    """
    import ase.io
    frames = ase.io.read(path, ":")
    values = {t: [] for t in targets}
    for i, f in enumerate(frames):
        calc = f.calc.results if f.calc is not None else {}
        for t in targets:
            if t in calc:
                values[t].append(np.asarray(calc[t]))
            elif t in f.arrays:
                values[t].append(np.asarray(f.arrays[t]))
            elif t in f.info:
                values[t].append(f.info[t])
            else:
                avail = sorted(set(calc) | set(f.arrays) | set(f.info))
                raise KeyError(f"{path}: frame {i} has no target {t!r}; available: {avail}")
    return frames, values


# ======================================================================================
# command line
# ======================================================================================
def main(argv=None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    p = stage_parser("jaxlr.data.generate.water_clusters",
                     "Generate the water-cluster reference data (see the module docstring).",
                     out="runs/water", sets=SET_CODES, default_set="water_clusters")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each single-threaded)")
    a = p.parse_args(argv)
    if a.workers < 1:
        p.error("--workers must be >= 1")
    return run_stages(a, lambda: run_sample(a.out, a.set_name, a.seed, a.workers),
                      lambda: run_label(a.out, a.set_name, a.seed, a.workers),
                      lambda: run_assemble(a.out, a.set_name, a.seed, a.dest, a.partial))


if __name__ == "__main__":
    sys.exit(main())
