"""A small periodic water set: 32-water boxes with GFN2-xTB energies, forces, stress and charges.

**This is a GFN2-xTB reference for machinery — periodic Qeq and density models, stress
training, molecular dynamics — not for physics.**  GFN2-xTB is a semi-empirical
tight-binding method, not a validated model of liquid water, and the frames come from a
classical force field at a fixed density.  Nothing learned from this set says anything
about real water.

Run (staged, resumable, deterministic for a given seed)::

    python -m jaxlr.data.generate.water_periodic {sample,label,assemble,all} \\
        --out runs/periodic --set {water_periodic,smoke} --seed 0 [--dest FILE]

(or ``python jaxlr/data/generate/water_periodic.py ...``).  Each stage writes small shard
files under ``OUT`` (``OUT/samples/SET/traj_*.extxyz``, ``OUT/labels/SET/*.npz``) to a
temporary name that is renamed when complete, so a killed run resumes where it stopped:
rerun the same command.  Frames whose SCF fails are recorded in
``OUT/labels/SET/dropped.jsonl`` (and a ``*.dropped.json`` marker so they are not retried).
One process, one core: run it with ``OMP_NUM_THREADS=1`` (and ``nice``) on shared machines.
Progress lines (done/total, seconds per item, time left) go to stderr.

Stage 1, sample (OpenMM, flexible TIP3P water)
----------------------------------------------
32 waters in a cubic box at 0.997 g/cm³ (molar mass 18.015 g/mol; edge :data:`EDGE` =
9.86536 Å, volume 960.15 Å³), periodic in 3D.  Force field: OpenMM's bundled ``tip3p.xml``
made flexible (``ForceField("tip3p.xml").createSystem(..., rigidWater=False,
constraints=None)``): TIP3P charges and Lennard-Jones (q_O = −0.834 e, q_H = +0.417 e,
σ_OO = 3.1507 Å, ε_OO = 0.636 kJ/mol) plus the harmonic O–H bond (r₀ = 0.9572 Å, k =
462750.4 kJ mol⁻¹ nm⁻², energy ½k(r − r₀)²) and H–O–H angle (θ₀ = 104.52°, k = 836.8
kJ mol⁻¹ rad⁻²) of that file.  Chosen over SPC/Fw (r₀ = 1.012 Å, θ₀ = 113.24°) because its
molecule is close to GFN2-xTB's (r = 0.959 Å, θ = 107.2° for the relaxed monomer): on
SPC/Fw frames the GFN2-xTB pressure was −6 GPa, dominated by O–H bonds too long for
GFN2-xTB; on flexible-TIP3P frames it is about +1 GPa.  Electrostatics by PME
(``ewaldErrorTolerance`` 1e-5), real-space and Lennard-Jones cutoff 4.8 Å (just under half
the edge) with the long-range dispersion correction; OpenMM's masses (O 15.99943,
H 1.007947 Da) and centre-of-mass motion remover.  No constraints: every bond and angle
vibrates, as GFN2-xTB's would.

Per trajectory: the 32 oxygens on the sites of a 2×2×2 fcc lattice (nearest O–O 3.49 Å),
each molecule (r₀, θ₀ above) in a random orientation → energy minimisation (OpenMM
L-BFGS, tolerance 10 kJ mol⁻¹ nm⁻¹) → velocities from the Maxwell–Boltzmann distribution → Langevin dynamics
(OpenMM ``LangevinMiddleIntegrator``, friction 1 ps⁻¹, time step 0.5 fs) for 5 ps of
equilibration, then one frame every 200 fs.  Ten trajectories of 30 frames: six at 300 K,
two at 350 K, two at 400 K (for spread; all at the same density, so the hot ones are at a
high pressure).  OpenMM's CPU platform with one thread and deterministic forces.  Random
numbers: one ``numpy`` generator per trajectory from ``SeedSequence([seed, set code,
trajectory index])``, which draws the orientations and the integer seeds of OpenMM's
velocity initialisation and Langevin noise.  Positions are written with every molecule
whole and its oxygen inside the box.

Stage 2, label (tblite GFN2-xTB through its ASE calculator)
-----------------------------------------------------------
``tblite.ase.TBLite`` with the settings in :data:`TBLITE_SETTINGS` (GFN2-xTB, accuracy 0.01
— tblite scales its SCF convergence thresholds by it; the default is 1 —, electronic
temperature 300 K,
≤ 250 SCF iterations, Broyden mixing with damping 0.4, superposition-of-atomic-densities
guess), periodic in 3D (tblite evaluates the Γ-point tight-binding Hamiltonian with lattice
sums).  A fresh calculator per frame, so that no frame's SCF starts from another's.  A
frame whose SCF fails is retried once with damping 0.2 and 1000 iterations, then dropped.
Measured cost: ≈ 5 core-s per frame (96 atoms, one thread; 6–12 on a loaded machine),
≈ 25–30 core-minutes for the set.

* ``energy``: total GFN2-xTB energy, eV.
* ``forces``: eV/Å, ``−∂E/∂R``.
* ``stress``: 3×3, eV/Å³, ASE's convention σ = (1/V) ∂E/∂ε (symmetric strain ε, scaled
  positions fixed; **positive under tension**, pressure = −tr σ / 3) — jaxlr's convention
  too.  tblite's ASE calculator returns exactly this (its virial divided by the volume);
  checked against finite differences of the energy in ``tests/test_water_periodic.py``.
* ``charges``: GFN2-xTB Mulliken charges, e (they sum to 0 to ~1e-13; to ~1e-7 as written
  with 8 decimals).

Stage 3, assemble
-----------------
A gzipped extended-XYZ file (``ase.io.read(path, ":")``), default
``OUT/SET.extxyz.gz`` (the committed one is ``jaxlr/data/files/water_periodic.extxyz.gz``).
Per frame: cell and ``pbc``, ``energy``, ``forces``, ``stress`` and ``charges`` (as ASE
calculator results), info ``charge`` (0, the total charge), sampling provenance
(``structure_id``, ``temperature_K``, ``trajectory``, ``snapshot``, ``md_time_fs``,
``ff_energy_eV``) and label provenance (:func:`provenance`: method, package versions,
settings, the force field, the seed and the sentence that this is a GFN2 reference for
machinery, not physics).
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
    write_assembled,
    write_extxyz,  # noqa: F401  (part of this module's interface)
)
from ._shards import load_samples as load_shards  # noqa: E402

# --------------------------------------------------------------------------------------
# jaxlr internals used by this generator: NONE (it runs in an environment with OpenMM and
# tblite only; the shard machinery of its sibling _shards.py imports numpy alone).
# --------------------------------------------------------------------------------------

NOTE = ("GFN2-xTB reference for machinery (periodic Qeq/density models, stress, MD), not for physics; "
        "frames from classical flexible TIP3P water at fixed density")

N_WATERS = 32
DENSITY_G_CM3 = 0.997
MASS_G_MOL = {"O": 15.999, "H": 1.008}
AVOGADRO = 6.02214076e23
KJ_MOL_EV = 96.48533212331002          # kJ/mol per eV

FORCE_FIELD = "tip3p.xml"              # OpenMM's bundled file, made flexible
WATER_R0_A = 0.9572                    # its O–H bond length (Å) and H–O–H angle (°)
WATER_THETA0_DEG = 104.52
CUTOFF_A = 4.8
EWALD_TOLERANCE = 1e-5
TIMESTEP_FS = 0.5
FRICTION_PER_PS = 1.0
MINIMIZE_TOLERANCE = 10.0              # kJ/mol/nm

#: tblite ASE-calculator settings of the labels (written into the provenance)
TBLITE_SETTINGS = {"method": "GFN2-xTB", "accuracy": 0.01, "electronic_temperature": 300.0,
                   "max_iterations": 250, "mixer_damping": 0.4, "guess": "sad"}
#: the one retry of a frame whose SCF failed
TBLITE_RETRY = {"mixer_damping": 0.2, "max_iterations": 1000}

SET_CODES = {"water_periodic": 11, "smoke": 12}
#: the packages whose versions go into the provenance (``openmm_version``, ...)
PACKAGES = ("tblite", "OpenMM", "ase", "numpy")
SYMBOLS = ["O", "H", "H"] * N_WATERS


def box_edge(n_waters: int = N_WATERS, density: float = DENSITY_G_CM3) -> float:
    """Edge (Å) of the cubic box holding ``n_waters`` waters at ``density`` g/cm³.

    Water's molar mass is 15.999 + 2 × 1.008 = 18.015 g/mol.

    Example:
      >>> round(box_edge(), 5), round(box_edge() ** 3, 2)
      (9.86536, 960.15)
    """
    if n_waters < 1 or not density > 0:
        raise ValueError(f"need n_waters >= 1 and a positive density, got {n_waters} and {density}.")
    molar = MASS_G_MOL["O"] + 2 * MASS_G_MOL["H"]
    volume = n_waters * molar / (density * AVOGADRO) * 1e24          # Å³
    return volume ** (1.0 / 3.0)


EDGE = box_edge()


# ======================================================================================
# the plan
# ======================================================================================
@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One Langevin trajectory of the sampling stage (steps of 0.5 fs)."""

    index: int
    temperature: float
    n_snapshots: int
    equilibration_steps: int = 10_000   # 5 ps
    interval_steps: int = 400           # 200 fs between frames


#: trajectory temperatures of the main set (K): 6 × 300, 2 × 350, 2 × 400; 30 frames each
TEMPERATURES = (300.0, 300.0, 300.0, 300.0, 300.0, 300.0, 350.0, 350.0, 400.0, 400.0)
SNAPSHOTS_PER_TRAJECTORY = 30


def plan(set_name: str) -> list[Trajectory]:
    """The trajectories of a set (deterministic).

    ``"water_periodic"``: 10 trajectories × 30 frames = 300 frames; ``"smoke"``: one short
    trajectory of 2 frames (100 fs of equilibration, frames 100 fs apart) for the tests.

    Example:
      >>> sum(t.n_snapshots for t in plan("water_periodic")), [t.n_snapshots for t in plan("smoke")]
      (300, [2])
    """
    if set_name == "water_periodic":
        return [Trajectory(k, t, SNAPSHOTS_PER_TRAJECTORY) for k, t in enumerate(TEMPERATURES)]
    if set_name == "smoke":
        return [Trajectory(0, 300.0, 2, equilibration_steps=200, interval_steps=200)]
    raise ValueError(f"unknown set {set_name!r}; choose from {sorted(SET_CODES)}")


def structure_id(set_name: str, traj: Trajectory, snap: int) -> str:
    """Frame name: set, trajectory and snapshot index.

    Example:
      >>> structure_id("water_periodic", plan("water_periodic")[3], 17)
      'water_periodic-t03-s17'
    """
    return f"{set_name}-t{traj.index:02d}-s{snap:02d}"


# ======================================================================================
# stage 1: sampling with OpenMM
# ======================================================================================
def initial_positions(rng, edge: float = EDGE) -> np.ndarray:
    """(96, 3) Å: oxygens on a 2×2×2 fcc lattice in the cubic box, molecules randomly oriented.

    Each molecule has the force field's equilibrium geometry (r₀ = 0.9572 Å, θ₀ = 104.52°),
    atoms in the order O H H; lattice constant ``edge / 2`` (nearest O–O 3.49 Å for the
    default edge).

    Example:
      >>> p = initial_positions(np.random.default_rng(0))
      >>> p.shape, round(float(np.linalg.norm(p[1] - p[0])), 4)
      ((96, 3), 0.9572)
    """
    r0, half = WATER_R0_A, math.radians(WATER_THETA0_DEG) / 2
    mol = np.array([[0.0, 0.0, 0.0], [r0 * math.sin(half), r0 * math.cos(half), 0.0],
                    [-r0 * math.sin(half), r0 * math.cos(half), 0.0]])
    a = edge / 2
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) + 0.25
    sites = np.array([(b + (i, j, k)) * a for i in range(2) for j in range(2) for k in range(2) for b in basis])
    return np.concatenate([mol @ random_rotation(rng).T + s for s in sites])


def wrap_molecules(positions, edge: float = EDGE) -> np.ndarray:
    """Shift each O H H molecule by lattice vectors so that its oxygen lies in [0, edge)³.

    Example:
      >>> p = np.array([[-0.1, 5.0, 10.0], [-0.9, 5.0, 10.0], [0.5, 5.0, 10.5]])
      >>> wrap_molecules(p, 9.0).round(2).tolist()
      [[8.9, 5.0, 1.0], [8.1, 5.0, 1.0], [9.5, 5.0, 1.5]]
    """
    p = np.array(positions, dtype=float).reshape(-1, 3, 3)
    shift = np.floor(p[:, 0, :] / edge) * edge
    return (p - shift[:, None, :]).reshape(-1, 3)


def water_system(n_waters: int = N_WATERS, edge: float = EDGE):
    """The OpenMM ``System`` of flexible TIP3P water in a cubic box (see the module docstring).

    Needs OpenMM.  Particles O H H per molecule; OpenMM's units (nm, kJ/mol, ps); PME with
    a 4.8 Å cutoff; harmonic bonds and angles, no constraints.

    Example:
      >>> # system = water_system()
      >>> # system.getNumParticles(), system.getNumConstraints()
      >>> # (96, 0)
    """
    from openmm import app, unit

    top = app.Topology()
    chain = top.addChain()
    for _ in range(n_waters):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        for name in ("H1", "H2"):
            top.addBond(o, top.addAtom(name, app.element.hydrogen, res))
    top.setPeriodicBoxVectors(np.eye(3) * edge / 10.0 * unit.nanometer)
    ff = app.ForceField(FORCE_FIELD)
    return ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=CUTOFF_A / 10.0 * unit.nanometer,
                           constraints=None, rigidWater=False, ewaldErrorTolerance=EWALD_TOLERANCE)


def sample_trajectory(set_name: str, traj: Trajectory, seed: int) -> list:
    """Frames of one trajectory (needs OpenMM and ASE).

    Returns:
      list of ``ase.Atoms`` (96 atoms O H H …, positions Å with each molecule whole and
      its oxygen in the box, cubic cell of edge :data:`EDGE`, ``pbc=True``) with info
      ``structure_id``, ``set``, ``temperature_K``, ``trajectory``, ``snapshot``,
      ``md_time_fs`` (time since the start of the dynamics), ``ff_energy_eV`` (force-field
      potential energy) and ``seed``.

    Example:
      >>> # frames = sample_trajectory("smoke", plan("smoke")[0], seed=0)
      >>> # [f.info["md_time_fs"] for f in frames]
      >>> # [100.0, 200.0]
    """
    import openmm as mm
    from ase import Atoms
    from openmm import unit

    rng = np.random.default_rng(np.random.SeedSequence([seed, SET_CODES[set_name], traj.index]))
    pos0 = initial_positions(rng)
    velocity_seed, noise_seed = (int(x) for x in rng.integers(1, 2**31 - 1, size=2))
    system = water_system()
    integrator = mm.LangevinMiddleIntegrator(traj.temperature * unit.kelvin, FRICTION_PER_PS / unit.picosecond,
                                             TIMESTEP_FS * unit.femtosecond)
    integrator.setRandomNumberSeed(noise_seed)
    platform = mm.Platform.getPlatformByName("CPU")
    context = mm.Context(system, integrator, platform, {"Threads": "1", "DeterministicForces": "true"})
    context.setPositions(pos0 / 10.0)
    mm.LocalEnergyMinimizer.minimize(context, MINIMIZE_TOLERANCE, 2000)
    context.setVelocitiesToTemperature(traj.temperature * unit.kelvin, velocity_seed)
    frames = []
    for snap, step in snapshot_steps(traj, integrator.step):
        state = context.getState(getPositions=True, getEnergy=True)
        pos = wrap_molecules(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
        e_ff = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_EV
        frame = Atoms(SYMBOLS, positions=pos, cell=np.eye(3) * EDGE, pbc=True)
        frame.info.update(structure_id=structure_id(set_name, traj, snap), set=set_name,
                          temperature_K=traj.temperature, trajectory=traj.index, snapshot=snap,
                          md_time_fs=step * TIMESTEP_FS, ff_energy_eV=float(e_ff), seed=seed)
        frames.append(frame)
    return frames


def run_sample(out: Path, set_name: str, seed: int) -> None:
    """Stage 1: write the missing trajectory shards ``out/samples/SET/traj_*.extxyz``.

    Example:
      >>> # run_sample(Path("runs/periodic"), "smoke", seed=0)
    """
    sample_stage(out, set_name, plan(set_name), functools.partial(sample_trajectory, set_name, seed=seed),
                 detail=f"; box edge {EDGE:.5f} Å, flexible TIP3P, {TIMESTEP_FS} fs")


def load_samples(out: Path, set_name: str) -> list:
    """All sampled frames of a set (``ase.Atoms``), in plan order.

    Raises:
      FileNotFoundError: a trajectory shard is missing (run the sample stage).

    Example:
      >>> # frames = load_samples(Path("runs/periodic"), "water_periodic")   # 300 frames
    """
    return load_shards(out, set_name, plan(set_name))


# ======================================================================================
# stage 2: labels with tblite
# ======================================================================================
def voigt_to_matrix(voigt) -> np.ndarray:
    """ASE's Voigt order (xx, yy, zz, yz, xz, xy) → symmetric 3×3.

    Example:
      >>> voigt_to_matrix([1, 2, 3, 4, 5, 6]).tolist()
      [[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]]
    """
    xx, yy, zz, yz, xz, xy = np.asarray(voigt, dtype=float)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def tblite_calculator(**overrides):
    """A fresh tblite ASE calculator with :data:`TBLITE_SETTINGS` (and ``overrides``), silent.

    Example:
      >>> # atoms.calc = tblite_calculator()               # GFN2-xTB, accuracy 0.01
      >>> # atoms.calc = tblite_calculator(**TBLITE_RETRY)  # the retry settings
    """
    from tblite.ase import TBLite
    return TBLite(**{**TBLITE_SETTINGS, **overrides}, verbosity=0)


def label_frame(atoms) -> dict | None:
    """GFN2-xTB labels of one periodic frame (needs tblite; ≈ 5 core-s for 96 atoms).

    Args:
      atoms: ``ase.Atoms`` of H and O, periodic along all three axes (not modified).

    Returns:
      ``{"energy": eV, "forces": (N, 3) eV/Å, "stress": (3, 3) eV/Å³ (ASE's sign,
      (1/V) ∂E/∂ε), "charges": (N,) e (Mulliken), "retried": bool}``, or None when the SCF
      fails with the default settings and with :data:`TBLITE_RETRY`.

    Raises:
      ValueError: a frame that is not periodic in 3D, or holds elements other than H, O.

    Example:
      >>> # labels = label_frame(frames[0])
      >>> # -np.trace(labels["stress"]) / 3 * 160.2177      # pressure, GPa
    """
    from ase import Atoms
    from ase.calculators.calculator import CalculationFailed

    if not np.asarray(atoms.pbc).all():
        raise ValueError("label_frame needs a frame periodic along all three axes (pbc=True).")
    bad = sorted(set(atoms.get_chemical_symbols()) - {"H", "O"})
    if bad:
        raise ValueError(f"element(s) {bad} in a water frame; only H and O are expected.")
    work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    retried = False
    for overrides in ({}, TBLITE_RETRY):
        work.calc = tblite_calculator(**overrides)
        try:
            energy = float(work.get_potential_energy())
        except CalculationFailed:
            retried = True
            continue
        return {"energy": energy, "forces": np.array(work.get_forces()),
                "stress": voigt_to_matrix(work.get_stress(voigt=True)),
                "charges": np.array(work.get_charges()), "retried": retried}
    return None


def _label_one(d: Path, frame) -> str:
    sid = frame.info["structure_id"]
    res, _, wall = label_and_store(d, sid, functools.partial(label_frame, frame),
                                   f"GFN2-xTB SCF failed, also with the retry settings {TBLITE_RETRY}")
    if res is None:
        return f"{sid} DROPPED after {wall:.1f} s"
    p = -np.trace(res["stress"]) / 3 * 160.21766208   # GPa
    return f"{sid} {wall:.1f} s E={res['energy']:.6f} eV P={p:.2f} GPa{' (retried)' if res['retried'] else ''}"


def run_label(out: Path, set_name: str, seed: int) -> None:
    """Stage 2: label the sampled frames not labelled (or dropped) yet.

    Frames are labelled in a seeded shuffled order so that a partial run covers every
    trajectory; each result is an ``out/labels/SET/ID.npz`` shard.

    Example:
      >>> # run_label(Path("runs/periodic"), "water_periodic", seed=0)
    """
    d = label_dir(out, set_name)
    label_stage(load_samples(out, set_name), d, set_name, functools.partial(_label_one, d),
                order_seed=[seed, SET_CODES[set_name], 999], noun="frames", detail=f"; tblite {TBLITE_SETTINGS}")


# ======================================================================================
# stage 3: assemble
# ======================================================================================
def provenance(seed: int) -> dict:
    """Header keys written into every frame of the assembled file.

    Example:
      >>> p = provenance(0)
      >>> "not for physics" in p["reference"], p["method"], p["tblite_accuracy"], p["box_edge_A"] == EDGE
      (True, 'GFN2-xTB', 0.01, True)
    """
    info = {"reference": NOTE, "method": "GFN2-xTB", "program": "tblite (ASE calculator)",
            "boundary": "periodic 3D, Gamma point with lattice sums",
            "energy_unit": "eV", "forces_unit": "eV/A", "stress_unit": "eV/A^3",
            "stress_convention": "ASE: (1/V) dE/dstrain at fixed scaled positions, positive under tension",
            "charges_kind": "GFN2-xTB Mulliken charges (e)",
            "sampler": "OpenMM tip3p.xml with rigidWater=False constraints=None (flexible TIP3P), "
                       "LangevinMiddleIntegrator, PME, NVT",
            "sampler_cutoff_A": CUTOFF_A, "sampler_ewald_tolerance": EWALD_TOLERANCE,
            "sampler_timestep_fs": TIMESTEP_FS, "sampler_friction_per_ps": FRICTION_PER_PS,
            "density_g_cm3": DENSITY_G_CM3, "box_edge_A": EDGE, "n_waters": N_WATERS, "seed": seed}
    for k, v in TBLITE_SETTINGS.items():
        info[f"tblite_{k}"] = v
    for name, v in installed_versions(PACKAGES).items():
        info[f"{name}_version"] = v
    return info


def assemble_frames(out: Path, set_name: str, seed: int, partial: bool = False) -> list:
    """The labelled frames of a set with calculator results and provenance (plan order).

    Raises:
      RuntimeError: frames neither labelled nor dropped, unless ``partial`` (then they are
        left out).

    Example:
      >>> # frames = assemble_frames(Path("runs/periodic"), "water_periodic", seed=0)
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    prov = provenance(seed)
    result = []
    for f, lab in labelled(load_samples(out, set_name), label_dir(out, set_name), set_name, partial=partial,
                           noun="frames"):
        f.info.update(prov)
        f.info.update(charge=0)
        s = lab["stress"]
        f.calc = SinglePointCalculator(f, energy=float(lab["energy"]), forces=lab["forces"],
                                       stress=np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]),
                                       charges=lab["charges"])
        result.append(f)
    return result


def run_assemble(out: Path, set_name: str, seed: int, dest: Path | None = None, partial: bool = False) -> Path:
    """Stage 3: write the assembled file (default ``OUT/SET.extxyz.gz``); returns its path.

    Example:
      >>> # run_assemble(Path("runs/periodic"), "water_periodic", 0,
      >>> #              dest=Path("jaxlr/data/files/water_periodic.extxyz.gz"))
    """
    return write_assembled(out, set_name, assemble_frames(out, set_name, seed, partial), dest)


# ======================================================================================
# command line
# ======================================================================================
def main(argv=None) -> int:
    """Command line (see the module docstring)."""
    p = stage_parser("jaxlr.data.generate.water_periodic",
                     "Generate the periodic GFN2-xTB water set (see the module docstring).",
                     out="runs/periodic", sets=SET_CODES, default_set="water_periodic")
    a = p.parse_args(argv)
    return run_stages(a, lambda: run_sample(a.out, a.set_name, a.seed), lambda: run_label(a.out, a.set_name, a.seed),
                      lambda: run_assemble(a.out, a.set_name, a.seed, a.dest, a.partial))


if __name__ == "__main__":
    sys.exit(main())
