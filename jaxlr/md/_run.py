"""A molecular-dynamics driver: :func:`run_md` (what ``jaxlr md`` runs).

From an ``ase.Atoms`` (or a structure file) and an energy model — the built-in ``"nacl"``
(Tosi–Fumi + ±1 point charges, PME) or ``"nacl-qeq"`` (Tosi–Fumi + Qeq charges), or a
trained checkpoint — it runs NVE, NVT (Nosé–Hoover chain or Langevin) or NPT (Nosé–Hoover
MTK) with jax-md, in jitted chunks of ``thermo_every`` steps (``lax.scan``), with the
documented jax-md neighbour-list loop: after each chunk the overflow flags are checked on
the host, and an overflowed chunk is redone with freshly allocated lists.  It writes
``thermo.csv``, ``trajectory.extxyz``, ``restart.npz`` and three plots into one folder.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._drift import energy_drift
from ._forcefield import BUILTIN_MODELS, build_forcefield
from ._integrators import ENSEMBLES, half_width, make_integrator
from ._output import (
    MDProgress,
    ThermoWriter,
    read_restart,
    read_thermo,
    thermo_columns,
    write_frame,
    write_plots,
    write_restart,
)

__all__ = ["ENSEMBLES", "MDResult", "run_md"]

# CODATA 2018 (exact SI since 2019 for e and k_B)
_E = 1.602176634e-19             # J per eV
_AMU = 1.66053906660e-27         # kg
KB_EV = 1.380649e-23 / _E        #: Boltzmann's constant, eV/K
#: jax-md's time unit with Å, eV and amu, in fs (Å·√(amu/eV) ≈ 10.18 fs)
TIME_UNIT_FS = 1e-10 * math.sqrt(_AMU / _E) * 1e15
BAR = 1e5 / _E * 1e-30           #: 1 bar in eV/Å³
AMU_PER_A3_IN_G_CM3 = _AMU * 1e3 / 1e-24   #: 1 amu/Å³ in g/cm³
#: NPT: cutoffs and meshes are set up for the box scaled by this factor (17 % less volume),
#: so they stay valid while the volume fluctuates; a box shrinking further stops the run
NPT_MARGIN = 0.94


class MDResult(NamedTuple):
    """What :func:`run_md` returns.

    Attributes:
      out: the output folder (``thermo.csv``, ``trajectory.extxyz``, ``restart.npz``,
        ``energy.png``, ``temperature.png``, ``pressure_volume.png``).
      step: the last step (counted from the start of the first run of a restart chain).
      thermo: ``{column: (rows,) array}`` of the rows written by this call (thermo.csv).
      atoms: the final ``ase.Atoms`` (positions Å, momenta, cell; energy, forces and
        charges on a single-point calculator).
      steps_per_second: MD steps per wall-clock second after the first (compiling) chunk
        (of the whole run when it had one chunk).
      compile_seconds: wall time of the first chunk, compilation included.
      reallocations: neighbour-list reallocations (overflowed chunks redone).
      description: the energy model in words.
    """

    out: Path
    step: int
    thermo: dict
    atoms: object
    steps_per_second: float
    compile_seconds: float
    reallocations: int
    description: str


def _positive(name, x, unit):
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number ({unit}), got {x!r}.") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be > 0 ({unit}), got {x!r}.")
    return v


def _count(name, x, minimum=1):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or int(x) < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {x!r}.")
    return int(x)


def _resolve_dtype(dtype):
    x64 = bool(jax.config.jax_enable_x64)
    if dtype is None:
        return jnp.float64 if x64 else jnp.float32
    name = jnp.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    if name == "float64" and not x64:
        raise ValueError("dtype='float64' needs jax_enable_x64 (jax.config.update('jax_enable_x64', True) or "
                         "JAX_ENABLE_X64=1) before anything runs; or pass dtype='float32'.")
    return jnp.dtype(name).type


def _read_structure(structure, model, n_ions, seed):
    import ase

    if structure is None:
        if n_ions is None:
            raise ValueError("no structure: pass ase.Atoms or a structure file, or n_ions with a built-in NaCl model "
                             "(a molten-salt box is generated), or a restart file.")
        if not (isinstance(model, str) and model in BUILTIN_MODELS):
            raise ValueError(f"n_ions generates a NaCl box, which needs a built-in model {BUILTIN_MODELS}; for a "
                             "checkpoint pass a structure.")
        from ._tosi_fumi import molten_nacl

        return molten_nacl(n_ions, seed=seed)
    if n_ions is not None:
        raise ValueError("pass either a structure or n_ions, not both.")
    if isinstance(structure, ase.Atoms):
        return structure.copy()                     # never change the caller's Atoms
    path = Path(structure)
    if not path.is_file():
        raise ValueError(f"structure file {str(structure)!r} does not exist.")
    import ase.io

    try:
        return ase.io.read(str(path))               # the last frame of a trajectory
    except Exception as err:                         # ASE raises many types for unreadable files
        raise ValueError(f"cannot read structure file {str(structure)!r} with ASE: {err}") from None


def _flatten(tree) -> dict:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def _restore(tree, stored: dict):
    """``tree`` with its leaves replaced by ``stored`` (by path); None when they do not fit."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = [jax.tree_util.keystr(p) for p, _ in leaves]
    if set(keys) != set(stored):
        return None
    new = []
    for k, (_, v) in zip(keys, leaves):
        s = stored[k]
        if s.shape != np.shape(v) or s.dtype != np.asarray(v).dtype:
            return None
        new.append(jnp.asarray(s))
    return jax.tree_util.tree_unflatten(treedef, new)


def run_md(structure=None, model="nacl", *, ensemble: str = "nve", temperature=None, pressure=None,
           dt: float = 2.0, steps: int = 1000, thermo_every: int = 10, traj_every: int | None = None,
           out="md", seed: int = 0, accuracy: float = 1e-5, dtype=None, restart=None, tau_t=None, tau_p=None,
           cutoff=None, n_ions=None, dr_threshold: float = 0.5, capacity_multiplier: float = 1.25,
           write_forces: bool = False, plots: bool = True, progress: bool = False, stream=None) -> MDResult:
    """Run molecular dynamics with jax-md and a jaxlr energy; write thermo, trajectory, restart and plots.

    The run is cut into jitted chunks of ``thermo_every`` steps (``lax.scan``); each chunk
    updates the neighbour lists inside, and after it the host checks the lists' overflow
    flags (an overflowed chunk is redone from its start with reallocated lists, jax-md's
    documented loop), that the energy is finite (else ``ValueError``: the run blew up) and,
    in NPT, that the box stayed wider than twice the longest cutoff plus skin (else
    ``ValueError`` naming the step).  A thermo row is written after every chunk, a
    trajectory frame (and the restart file) every ``traj_every`` steps and at the end.

    Conventions: Å, eV, amu, fs (input ``dt``, ``tau_t``, ``tau_p``), ps (output time),
    K, bar (1 bar = 10⁵ Pa = 6.2415e-7 eV/Å³), g/cm³.  The cell is turned into ASE's
    standard (lower-triangular) form — jax-md's box is its transpose, upper triangular,
    with fractional coordinates — so output positions are in that (possibly rotated)
    frame.  Temperatures count 3N degrees of freedom (jax-md).  Pressure is the virial
    pressure (2 E_kin − ∂U/∂ε)/(3V), ε an isotropic strain.  Velocities are in ASE's
    units (``atoms.get_velocities()``).

    Ensembles: "nve" (velocity Verlet; with Qeq :func:`jaxlr.md.qeq_nve`, charges carried
    with the extended-Lagrangian warm start), "nvt-nh" (Nosé–Hoover chain), "nvt-langevin"
    (BAOAB, friction 1/τ_T), "npt" (isotropic Nosé–Hoover barostat, ``pressure`` in bar;
    cutoffs and PME mesh are set up for the box scaled by ``NPT_MARGIN`` = 0.94, so the
    volume may shrink by 17 % before the run stops).  With Qeq under a thermostat or
    barostat the previous charges start each solve, at about two solves per step.
    thermo.csv's ``conserved_eV`` is the total energy (NVE), jax-md's
    ``nvt_nose_hoover_invariant`` / ``npt_nose_hoover_invariant``, or NaN (Langevin).

    Built-in models: "nacl" is the Tosi–Fumi rigid-ion model (:data:`jaxlr.md.TOSI_FUMI_NACL`)
    with ±1 e point charges summed by PME; "nacl-qeq" replaces the charges by Qeq charges
    (:data:`jaxlr.md.NACL_QEQ`, a toy).  Their short range is *shifted-force*: φ(r) − φ(r_c)
    − (r − r_c) φ'(r_c) below the cutoff r_c, so energy and force vanish there and NVE
    conserves energy (a plain truncation, :func:`jaxlr.md.tosi_fumi_neighbor_list`, jumps
    by ~2 meV per Cl–Cl pair crossing r_c = 5.8 Å).  Structures may hold Na and Cl only.

    Args:
      structure: ``ase.Atoms`` (not modified) or a file ASE reads (its last frame), periodic
        in all three directions; None with ``n_ions`` (built-in models: a molten-NaCl box
        from :func:`jaxlr.md.molten_nacl`) or with ``restart``.  Non-zero momenta in the
        Atoms are used as initial velocities; otherwise they are drawn from
        Maxwell–Boltzmann at ``temperature`` (centre-of-mass momentum removed).
      model: "nacl", "nacl-qeq", a checkpoint folder (``jaxlr.train.save`` / ``jaxlr
        fit``) or a ``(potential, variables)`` pair.
      ensemble: one of "nve", "nvt-nh", "nvt-langevin", "npt".
      temperature: K (> 0): the thermostat target, and the temperature of drawn
        velocities; required unless NVE starts from given velocities.
      pressure: bar, NPT only (default 1 bar there); passing it otherwise raises.
      dt: time step in fs (> 0).  steps: number of steps of this call (≥ 1).
      thermo_every: steps per chunk and per thermo row (≥ 1).
      traj_every: steps between trajectory frames, a multiple of ``thermo_every``
        (default ``10 * thermo_every``).
      out: output folder (created).  A fresh run replaces its files; a restart appends to
        thermo.csv and trajectory.extxyz when they are there.
      seed: PRNG seed (velocities, Langevin noise, the generated NaCl box).
      accuracy: relative RMS force accuracy of the PME electrostatics.
      dtype: "float32" or "float64" (default: float64 when ``jax_enable_x64`` is on).
      restart: a ``restart.npz`` of an earlier run: positions, momenta, box and step are
        continued.  With the same ensemble, model and dtype the integrator state
        (thermostat/barostat chains, Langevin key, Qeq charges and extended-Lagrangian
        history) and the force field's static choices (PME mesh, cutoffs) are restored,
        so the continuation is exact to rounding; otherwise the new ensemble starts from
        the stored positions, momenta and box.
      tau_t: thermostat time constant in fs (default 100 dt); Langevin friction is 1/τ_T.
      tau_p: barostat time constant in fs (default 1000 dt).
      cutoff: Tosi–Fumi truncation (Å) of the built-ins (default min(9 Å, half box − skin)).
      n_ions: generate a molten-NaCl box of this many ions (built-in models only).
      dr_threshold: neighbour-list skin (Å).  capacity_multiplier: spare list capacity.
      write_forces: also write forces into the trajectory.
      plots: write energy.png, temperature.png, pressure_volume.png (matplotlib).
      progress: print a progress line (steps/s, temperature, energy) to ``stream``
        (default stderr).

    Returns:
      an :class:`MDResult`.

    Raises:
      ValueError (before anything is compiled): temperature, dt, tau ≤ 0; steps or
        thermo_every < 1; an unknown ensemble; ``pressure`` for NVE/NVT; a non-periodic
        structure; elements the model does not know; a model that is neither a built-in
        nor a checkpoint; a box narrower than twice the cutoffs plus skin; a restart file
        of another system.  During the run: a non-finite energy, an NPT box that shrank
        below twice the cutoffs (with the step).

    Example:
      >>> import tempfile
      >>> from jaxlr.md import run_md
      >>> res = run_md(model="nacl", n_ions=64, ensemble="nve", temperature=1200.0, dt=2.0, steps=4,
      ...              thermo_every=2, accuracy=1e-3, out=tempfile.mkdtemp(), plots=False)
      >>> res.step, sorted(res.thermo)[:3], len(res.atoms)
      (4, ['conserved_eV', 'density_g_cm3', 'kinetic_eV'], 64)
    """
    # ---- host checks (nothing compiled yet) ---------------------------------------------
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {', '.join(ENSEMBLES)}.")
    dt_fs = _positive("dt (the time step)", dt, "fs")
    steps = _count("steps", steps)
    thermo_every = _count("thermo_every", thermo_every)
    traj_every = 10 * thermo_every if traj_every is None else _count("traj_every", traj_every)
    if traj_every % thermo_every:
        raise ValueError(f"traj_every ({traj_every}) must be a multiple of thermo_every ({thermo_every}): frames are "
                         "written at the end of a chunk.")
    if temperature is not None:
        temperature = _positive("temperature", temperature, "K")
    elif ensemble != "nve":
        raise ValueError(f"ensemble {ensemble!r} needs a target temperature (K).")
    if pressure is not None and ensemble != "npt":
        raise ValueError(f"pressure is the NPT target; ensemble {ensemble!r} keeps the volume fixed (drop pressure "
                         "or use ensemble='npt').")
    pressure_bar = 1.0 if pressure is None else float(pressure)
    if not math.isfinite(pressure_bar):
        raise ValueError(f"pressure must be a finite number (bar), got {pressure!r}.")
    tau_t_fs = 100.0 * dt_fs if tau_t is None else _positive("tau_t", tau_t, "fs")
    tau_p_fs = 1000.0 * dt_fs if tau_p is None else _positive("tau_p", tau_p, "fs")
    accuracy = _positive("accuracy", accuracy, "relative force error")
    dr_threshold = float(dr_threshold)
    if not (math.isfinite(dr_threshold) and dr_threshold >= 0):
        raise ValueError(f"dr_threshold (the neighbour-list skin) must be ≥ 0 Å, got {dr_threshold!r}.")
    if isinstance(model, (str, Path)) and str(model) not in BUILTIN_MODELS and not Path(model).is_dir():
        raise ValueError(f"model {str(model)!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a checkpoint "
                         "folder.")
    dtype = _resolve_dtype(dtype)
    dtype_name = jnp.dtype(dtype).name
    model_name = model if isinstance(model, str) and model in BUILTIN_MODELS else (
        str(Path(model).resolve()) if isinstance(model, (str, Path)) else "potential")

    step0, time0 = 0, 0.0
    static = None
    stored_leaves = None
    momenta = None
    if restart is not None:
        meta, arrays, stored_leaves = read_restart(restart)
        numbers = np.asarray(arrays["numbers"])
        if structure is not None or n_ions is not None:
            given = _read_structure(structure, model, n_ions, seed)
            if len(given) != len(numbers) or not np.array_equal(given.numbers, numbers):
                raise ValueError(f"restart file {str(restart)!r} belongs to another system: it holds {len(numbers)} "
                                 f"atoms ({_formula(numbers)}), the structure {len(given)} ({_formula(given.numbers)}).")
        masses = np.asarray(arrays["masses"], np.float64)
        cell = np.asarray(arrays["cell"], np.float64)
        frac = np.asarray(arrays["fractional_positions"], np.float64)
        momenta = np.asarray(arrays["momenta"], np.float64)
        step0, time0 = int(meta["step"]), float(meta["time_ps"])
        exact = (meta["ensemble"] == ensemble and meta["model"] == model_name and meta["dtype"] == dtype_name)
        build_cell = np.asarray(arrays["reference_cell"], np.float64) if exact else cell
        if ensemble == "npt" and not exact:
            build_cell = NPT_MARGIN * cell
        static = meta["static"] if exact else None
        if not exact:
            stored_leaves = None
    else:
        atoms = _read_structure(structure, model, n_ions, seed)
        pbc = np.asarray(atoms.pbc, bool)
        if not pbc.all():
            raise ValueError(f"jaxlr md needs a periodic structure (pbc all True with a 3D cell), got pbc = "
                             f"{pbc.tolist()}; the energy models here use a periodic box (PME, minimum-image "
                             "neighbour lists).")
        if len(atoms) < 2:
            raise ValueError("the structure needs at least two atoms.")
        if abs(atoms.cell.volume) < 1e-6:
            raise ValueError("the structure's cell is degenerate (zero volume).")
        numbers = np.asarray(atoms.numbers)
        masses = np.asarray(atoms.get_masses(), np.float64)
        cell, rotation = atoms.cell.standard_form()          # lower triangular: box = cell.T upper
        cell = np.asarray(cell, np.float64)
        frac = np.asarray(atoms.get_scaled_positions(wrap=True), np.float64)
        if not np.all(np.isfinite(frac)):
            raise ValueError("the structure's positions contain NaN or inf.")
        p = np.asarray(atoms.get_momenta(), np.float64)
        if np.any(p != 0):
            momenta = p @ np.asarray(rotation).T
        build_cell = NPT_MARGIN * cell if ensemble == "npt" else cell
    if np.any(masses <= 0):
        raise ValueError("every atom needs a mass > 0 (amu).")
    if momenta is None and temperature is None:
        raise ValueError("NVE needs initial velocities: give a temperature (K) to draw them from Maxwell–Boltzmann, "
                         "or a structure with momenta.")

    from jax_md import space

    # ---- force field and integrator (host set-up; PME tuned here) ------------------------
    ref_box = np.asarray(build_cell, np.float64).T
    box_now = np.asarray(cell, np.float64).T
    displacement_fn, shift_fn = space.periodic_general(jnp.asarray(ref_box, dtype))
    ff = build_forcefield(model, numbers, ref_box, displacement_fn, frac, accuracy=accuracy,
                          dr_threshold=dr_threshold, capacity_multiplier=capacity_multiplier, cutoff=cutoff,
                          dtype=dtype, static=static)
    if ff.list_cutoff > float(half_width(jnp.asarray(box_now))) * (1 + 1e-9):
        raise ValueError(f"the box (half width {float(half_width(jnp.asarray(box_now))):.4g} Å) is narrower than the "
                         f"longest cutoff plus skin ({ff.list_cutoff:.4g} Å); use a larger box.")
    dt_unit = dt_fs / TIME_UNIT_FS
    kT = None if temperature is None else KB_EV * temperature
    integ = make_integrator(ff, shift_fn, ensemble, dt=dt_unit, kT=kT, pressure=pressure_bar * BAR,
                            tau_t=tau_t_fs / TIME_UNIT_FS, tau_p=tau_p_fs / TIME_UNIT_FS,
                            reference_box=jnp.asarray(ref_box, dtype), masses=jnp.asarray(masses, dtype), kB=KB_EV)

    R0 = jnp.asarray(frac, dtype)
    P0 = None if momenta is None else jnp.asarray(momenta, dtype)
    # NPT: lists are allocated in the margin box (every distance ×0.94), so their capacity
    # holds the densest box the run accepts; updates use the current box
    alloc_kw = {"box": jnp.asarray(ref_box, dtype)} if ensemble == "npt" else {}

    def allocate(R, extra=0):
        return tuple(fn.allocate(R, extra_capacity=extra, **alloc_kw) for fn in ff.neighbor_fns)

    nbrs = allocate(R0)
    key = jax.random.PRNGKey(int(seed))
    carry = integ.init(key, R0, nbrs, P0, jnp.asarray(box_now, dtype))
    if stored_leaves is not None:
        restored = _restore(carry, stored_leaves)
        if restored is not None:
            carry = restored
    list_cutoff = ff.list_cutoff

    @jax.jit
    def run_chunk(carry, nbrs, n):
        """n steps (traced: one compilation serves every chunk length, n = 0 observes only)."""
        def body(i, c):
            carry, nbrs, bad = c
            kw = integ.box_kwargs(carry)
            R = carry["md"].position
            nbrs = tuple(fn.update(R, nb, **kw) for fn, nb in zip(ff.neighbor_fns, nbrs))
            carry = integ.step(carry, nbrs)
            if ensemble == "npt":
                too_small = half_width(integ.box(carry)) < list_cutoff
                bad = jnp.where((bad < 0) & too_small, i, bad)
            return carry, nbrs, bad

        carry, nbrs, bad = jax.lax.fori_loop(0, n, body, (carry, nbrs, jnp.asarray(-1, jnp.int32)))
        return carry, nbrs, bad, integ.observe(carry, nbrs), integ.frame(carry, nbrs)

    # ---- output folder --------------------------------------------------------------------
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    qeq = ff.qeq is not None
    fresh = restart is None
    traj_path = out / "trajectory.extxyz"
    if fresh and traj_path.exists():
        traj_path.unlink()
    writer = ThermoWriter(out / "thermo.csv", thermo_columns(qeq), append=not fresh)
    total_mass = float(np.sum(masses))
    rows = []

    def to_row(step, obs):
        o = {k: np.asarray(v) for k, v in obs.items()}
        row = {"step": step, "time_ps": time0 + (step - step0) * dt_fs * 1e-3,
               "temperature_K": float(o["temperature_K"]), "potential_eV": float(o["potential_eV"]),
               "kinetic_eV": float(o["kinetic_eV"]), "total_eV": float(o["total_eV"]),
               "conserved_eV": float("nan") if ensemble == "nvt-langevin" else float(o["conserved_eV"]),
               "pressure_bar": float(o["pressure"]) / BAR, "volume_A3": float(o["volume_A3"]),
               "density_g_cm3": total_mass / float(o["volume_A3"]) * AMU_PER_A3_IN_G_CM3}
        if qeq:
            row["pcg_iterations"] = int(o["pcg_iterations"])
            row["total_charge_e"] = float(o["total_charge_e"])
        return row

    def frame_atoms(step, row, frame):
        f = {k: np.asarray(v, np.float64) for k, v in frame.items()}
        charges = f.get("charges")
        if charges is None and ff.fixed_charges is not None:
            charges = np.asarray(ff.fixed_charges, np.float64)
        return dict(numbers=numbers, positions=f["positions"], cell=f["box"].T, momenta=f["momenta"],
                    energy=row["potential_eV"], forces=f["forces"] if write_forces else None, charges=charges,
                    info={"step": int(step), "time_ps": row["time_ps"], "temperature_K": row["temperature_K"]}), f

    def save(step, row, frame, carry):
        kw, f = frame_atoms(step, row, frame)
        write_frame(traj_path, **kw)
        box = f["box"]
        meta = {"step": int(step), "time_ps": row["time_ps"], "ensemble": ensemble, "model": model_name,
                "dtype": dtype_name, "static": ff.static, "seed": int(seed), "dt_fs": dt_fs}
        arrays = {"numbers": numbers, "masses": masses, "cell": box.T, "reference_cell": ref_box.T,
                  "positions": f["positions"], "fractional_positions": np.asarray(carry["md"].position, np.float64),
                  "momenta": f["momenta"], "velocities": f["momenta"] / masses[:, None]}
        if f.get("charges") is not None:
            arrays["charges"] = f["charges"]
        write_restart(out / "restart.npz", meta=meta, arrays=arrays, state_leaves=_flatten(carry))
        return kw

    def check(step_a, step_b, row, carry):
        values = [row["potential_eV"], row["kinetic_eV"], row["pressure_bar"]]
        if not (np.all(np.isfinite(values)) and np.all(np.isfinite(np.asarray(carry["md"].position)))):
            raise ValueError(f"the simulation blew up between steps {step_a} and {step_b}: non-finite energy or "
                             f"positions. Use a smaller time step (dt = {dt_fs:g} fs now), check the structure for "
                             f"overlapping atoms, or start colder. Output up to step {step_a} is in {out}.")

    bar = MDProgress(progress, steps, step0, stream)
    bar.message(f"jaxlr md: {len(numbers)} atoms, {ensemble}, {ff.description}, dt {dt_fs:g} fs, {dtype_name}")
    last_frame = None
    timing = {"compile": None, "md": 0.0, "md_steps": 0}

    def timed_chunk(carry, nbrs, n):
        t0 = time.perf_counter()
        res = run_chunk(carry, nbrs, jnp.asarray(n, jnp.int32))
        jax.block_until_ready(res[3])
        elapsed = time.perf_counter() - t0
        if timing["compile"] is None:
            timing["compile"] = elapsed           # the first call compiles
        else:
            timing["md"] += elapsed
            timing["md_steps"] += n
        return res

    def rate():
        return timing["md_steps"] / timing["md"] if timing["md_steps"] else steps / timing["compile"]

    step = step0
    reallocations = 0
    try:
        if fresh:
            _, _, _, obs, frame = timed_chunk(carry, nbrs, 0)
            row = to_row(0, obs)
            check(0, 0, row, carry)
            writer.write(row)
            rows.append(row)
            last_frame = save(0, row, frame, carry)
        while step < step0 + steps:
            n = min(thermo_every, step0 + steps - step)
            for attempt in range(8):
                new_carry, new_nbrs, bad, obs, frame = timed_chunk(carry, nbrs, n)
                if int(bad) >= 0 or not any(bool(nb.did_buffer_overflow) for nb in new_nbrs):
                    break
                reallocations += 1                # redo the chunk with lists for the chunk's start
                nbrs = allocate(carry["md"].position, extra=4 * attempt)
            else:
                raise ValueError(f"the neighbour lists kept overflowing near step {step}: the atoms are "
                                 "collapsing (time step too large?) or capacity_multiplier is too small.")
            bad = int(bad)
            if bad >= 0:
                raise ValueError(f"NPT: at step {step + bad + 1} the box shrank below twice the longest cutoff plus "
                                 f"skin ({list_cutoff:.4g} Å; minimum image): use a larger system, a longer barostat "
                                 f"time constant (tau_p) or a lower pressure. Output up to step {step} is in {out}.")
            row = to_row(step + n, obs)
            check(step, step + n, row, new_carry)
            carry, nbrs = new_carry, new_nbrs
            step += n
            writer.write(row)
            rows.append(row)
            if (step - step0) % traj_every == 0 or step == step0 + steps:
                last_frame = save(step, row, frame, carry)
            bar.update(step, rate(), row["temperature_K"], row["total_eV"], final=step == step0 + steps)
    finally:
        writer.close()
    if plots:
        write_plots(read_thermo(out / "thermo.csv"), out, len(numbers), target_temperature=temperature,
                    target_pressure=pressure_bar if ensemble == "npt" else None)
    thermo = {c: np.array([r[c] for r in rows], dtype=np.float64) for c in thermo_columns(qeq)}
    bar.message(f"done: step {step}, {rate():.1f} steps/s (compilation {timing['compile']:.1f} s), "
                f"{reallocations} list reallocations{_drift_words(thermo, len(numbers))}; output in {out}")
    return MDResult(out, step, thermo, _final_atoms(last_frame), float(rate()), float(timing["compile"]),
                    reallocations, ff.description)


def _drift_words(thermo, n_atoms) -> str:
    """", conserved-energy drift +x ± y meV/atom/ps" for runs with an invariant and ≥ 3 rows."""
    try:
        d = energy_drift(thermo["time_ps"], thermo["conserved_eV"], n_atoms)
    except ValueError:                     # under 3 rows, or no invariant (Langevin: NaN)
        return ""
    return f", conserved-energy drift {d.slope:+.2e} ± {d.stderr:.1e} meV/atom/ps"


def _formula(numbers) -> str:
    from ase.data import chemical_symbols

    z, c = np.unique(np.asarray(numbers), return_counts=True)
    return "".join(f"{chemical_symbols[int(a)]}{int(b)}" for a, b in zip(z, c))


def _final_atoms(kw):
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = ase.Atoms(numbers=kw["numbers"], positions=kw["positions"], cell=kw["cell"], pbc=True)
    atoms.set_momenta(kw["momenta"])
    results = {"energy": kw["energy"]}
    if kw["forces"] is not None:
        results["forces"] = kw["forces"]
    if kw["charges"] is not None:
        results["charges"] = kw["charges"]
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(kw["info"])
    return atoms
