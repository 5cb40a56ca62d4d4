"""Molten NaCl MD (Tosi–Fumi + PME): jaxlr + jax-md against OpenMM.

The rigid-ion Tosi–Fumi model (``jaxlr.md.tosi_fumi_neighbor_list``, 10 Å plain
truncation, plus ±1 point charges with PME) in jaxlr + jax-md and in OpenMM
(``NonbondedForce`` PME + ``CustomNonbondedForce``, the set-up of
``tests/test_openmm_reference.py``).  Every run starts from the same liquid: a rock-salt box
(``jaxlr.md.molten_nacl``) melted for ``--melt-ps`` at 1,200 K with OpenMM's CPU platform
(Langevin), whose positions and velocities all codes take over.

Parts (each selectable; default ``--parts speed``):

* ``speed``  — NVE steps/s, neighbour-list updates included as each code runs them
  (jax-md: lists rebuilt inside the jitted loop when an ion moved half the skin, blocks of
  ``--block`` steps with the overflow check; OpenMM: ``integrator.step``).  Matched,
  measured PME accuracy: each code's relative RMS Coulomb-force error against a float64
  jaxlr reference tuned for 1e-9; OpenMM CPU's ``ewaldErrorTolerance`` and jaxlr float32's
  ``accuracy`` are the loosest of a few candidates whose measured error is ≤ 1e-4; jaxlr
  float64 at a measured 1e-5 is reported alone.  Compilation / context creation excluded.
* ``drift``  — NVE energy drift (meV/atom/ps, a straight-line fit of the total energy) and
  fluctuation (standard deviation, meV/atom) at dt = 1 and 2 fs: jaxlr float64 (1e-5) and
  float32 (1e-4) beside OpenMM Reference (tolerance 1e-5) and CPU (the matched tolerance).
* ``nvt``    — Langevin at 1,200 K: mean potential energy (eV/ion) and pressure (GPa) with
  block-average error bars, jaxlr (float64, jax-md ``nvt_langevin``) against OpenMM
  (``LangevinMiddleIntegrator``; pressure from ``MonteCarloBarostat.computeCurrentPressure``,
  a finite difference of the energy, which includes the tiny impulsive term of the plain
  truncation that the analytic virial of jaxlr leaves out), and the kinetic energy's mean and
  variance against the canonical 3N/2 kT and 3N/2 (kT)².
* ``npt``    — mean density at 1,200 K and 1 bar: jax-md ``npt_nose_hoover`` against OpenMM's
  ``MonteCarloBarostat`` (Langevin).
* ``qeq``    — the toy Qeq NaCl (``jaxlr.md.qeq_nve`` with ``NACL_QEQ`` plus the Tosi–Fumi
  short range), NVE for ``--qeq-ps`` at three settings: a tight PCG tolerance (1e-8) and a
  loose one (1e-3) with the extended-Lagrangian warm start, and the loose one started from
  the previous step's charges.  Cost per step against the fixed-charge model, PCG
  iterations per step, energy drift and fluctuation.

Usage::

    python benchmarks/bench_md.py [--parts speed,drift,nvt,npt,qeq] [--sizes 1000,4096]
        [--drift-n 512] [--drift-ps 1] [--nvt-ps 2] [--npt-ps 5] [--qeq-ps 2] [--steps 200] [--threads N]

Sizes for ``speed`` default to 1,000 and 4,096 ions (16,384 with ``--sizes``); the other
parts use ``--drift-n`` ions.  Progress goes to stderr, tables to stdout.  Units: Å, eV, fs;
jax-md's time unit with amu masses is Å·√(amu/eV) = 10.1805 fs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np

from jaxlr.md import energy_drift

KJ_MOL_PER_EV = 96.48533212331002          # exact (2019 SI)
KB = 8.617333262e-5                        # eV/K
TAU_FS = 10.180505671                      # jax-md time unit in fs (Å, eV, amu)
EV_A3_IN_GPA = 160.21766208
CUTOFF = 10.0                              # Å, Tosi–Fumi truncation and OpenMM's Coulomb cutoff
TEMPERATURE = 1200.0


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{model}, {os.cpu_count()} cores, load average {load}"


class Progress:
    """One line per ~5 s on stderr ('\\r' updates on a terminal)."""

    def __init__(self, label, total):
        self.label, self.total, self.t0, self.last = label, total, time.perf_counter(), 0.0
        self.live = sys.stderr.isatty()

    def __call__(self, done):
        now = time.perf_counter()
        if now - self.last < 5.0 and done < self.total:
            return
        self.last = now
        end = "\n" if (done >= self.total or not self.live) else ""
        sys.stderr.write(("\r" if self.live else "") + f"  {self.label}: {done}/{self.total} "
                         f"({now - self.t0:.0f} s)" + end)
        sys.stderr.flush()


def block_error(x, blocks=5):
    """Standard error of the mean from ``blocks`` block averages."""
    x = np.asarray(x)
    m = len(x) // blocks
    if m < 1:
        return float("nan")
    means = x[: m * blocks].reshape(blocks, m).mean(axis=1)
    return float(means.std(ddof=1) / np.sqrt(blocks))


def set_precision(dtype):
    jax.config.update("jax_enable_x64", dtype == "float64")


# --------------------------------------------------------------------------------------
# OpenMM
# --------------------------------------------------------------------------------------
def openmm_system(species, cell, tolerance, barostat=None):
    from jaxlr.testing import openmm_tosi_fumi_system

    return openmm_tosi_fumi_system(species, cell, tolerance=tolerance, cutoff=CUTOFF, barostat=barostat)


def openmm_context(system, integrator, platform_name, threads):
    import openmm

    props = {"Threads": str(threads)} if platform_name == "CPU" else {}
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name), props)


def openmm_state(context):
    """(positions Å, velocities Å/fs, cell rows Å, potential eV, kinetic eV)."""
    st = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
    pos = np.asarray(st.getPositions(asNumpy=True)._value) * 10.0
    vel = np.asarray(st.getVelocities(asNumpy=True)._value) * 10.0 / 1000.0
    cell = np.asarray(st.getPeriodicBoxVectors(asNumpy=True)._value) * 10.0
    return (pos, vel, cell, st.getPotentialEnergy()._value / KJ_MOL_PER_EV,
            st.getKineticEnergy()._value / KJ_MOL_PER_EV)


def melt(n, ps, threads, seed=0):
    """A 1,200 K liquid from the rock-salt box: OpenMM CPU Langevin (2 fs), returns
    (positions Å, velocities Å/fs, species, cell rows Å)."""
    import openmm

    from jaxlr.md import molten_nacl

    atoms = molten_nacl(n, seed=seed)
    species = (atoms.numbers == 17).astype(int)
    cell = atoms.cell.array
    integ = openmm.LangevinMiddleIntegrator(TEMPERATURE, 5.0, 0.002)
    integ.setRandomNumberSeed(seed + 1)
    ctx = openmm_context(openmm_system(species, cell, 1e-4), integ, "CPU", threads)
    ctx.setPositions(atoms.positions / 10.0)
    ctx.setVelocitiesToTemperature(TEMPERATURE, seed + 1)
    steps = int(round(ps * 500))
    bar = Progress(f"melt {n} ions, {ps:g} ps (OpenMM CPU)", steps)
    for k in range(0, steps, 100):
        integ.step(min(100, steps - k))
        bar(min(k + 100, steps))
    pos, vel, cell, _, _ = openmm_state(ctx)
    return pos, vel, species, cell


# --------------------------------------------------------------------------------------
# jaxlr + jax-md
# --------------------------------------------------------------------------------------
class JaxModel:
    """Tosi–Fumi + PME in jax-md (fractional coordinates), one neighbour list per term."""

    def __init__(self, pos, species, cell, *, dtype, accuracy, params=None, short_range="truncated"):
        import jax.numpy as jnp
        from jax_md import space

        from jaxlr.md import TOSI_FUMI_NACL, coulomb_neighbor_list, tosi_fumi_neighbor_list

        set_precision(dtype)
        self.dtype = jnp.float64 if dtype == "float64" else jnp.float32
        self.box = jnp.asarray(cell.T, self.dtype)
        self.cell = cell
        self.displacement, self.shift = space.periodic_general(self.box)
        self.species = species
        self.q = np.where(species == 0, 1.0, -1.0)
        self.R = jnp.asarray(pos @ np.linalg.inv(cell) % 1.0, self.dtype)
        self.nfn_c, self.coulomb = coulomb_neighbor_list(self.displacement, self.box, charges=self.q,
                                                         accuracy=accuracy, positions_for_tuning=self.R,
                                                         params=params)
        if short_range == "shifted-force":          # a diagnostic: energy and force continuous at r_c
            from jaxlr.md._forcefield import shifted_force_tosi_fumi

            self.nfn_s, self.short = shifted_force_tosi_fumi(self.displacement, self.box, species, r_cutoff=CUTOFF,
                                                             dr_threshold=0.5, capacity_multiplier=1.25)
        else:
            self.nfn_s, self.short = tosi_fumi_neighbor_list(self.displacement, self.box, species, r_cutoff=CUTOFF)
        self.mass = jnp.asarray(np.asarray(TOSI_FUMI_NACL.masses)[species], self.dtype)

    def energy(self, R, neighbor, **kw):
        return self.coulomb(R, neighbor[0], **kw) + self.short(R, neighbor[1], **kw)

    def allocate(self, R, **kw):
        return (self.nfn_c.allocate(R, **kw), self.nfn_s.allocate(R, **kw))

    def update(self, R, nbrs, **kw):
        return (self.nfn_c.update(R, nbrs[0], **kw), self.nfn_s.update(R, nbrs[1], **kw))

    def coulomb_forces(self, R=None):
        R = self.R if R is None else R
        nb = self.nfn_c.allocate(R)
        return -np.asarray(jax.jit(jax.grad(self.coulomb))(R, nb), np.float64)

    def momenta(self, vel):
        import jax.numpy as jnp
        return jnp.asarray(np.asarray(self.mass)[:, None] * vel * TAU_FS, self.dtype)


def run_blocks(step, state, nbrs, model, n_blocks, block, observe=None, box_of=None, label="md"):
    """The jax-md loop: jitted blocks of steps with list updates inside, reallocation and a
    redo on overflow.  Returns (state, nbrs, observations per block, seconds after the
    first (compiling) block, reallocations)."""
    def kw(s):
        return {"box": box_of(s)} if box_of else {}

    @jax.jit
    def run(state, nbrs):
        def body(carry, _):
            s, nb = carry
            nb = model.update(s.position, nb, **kw(s))
            return (step(s, neighbor=nb), nb), None
        (state, nbrs), _ = jax.lax.scan(body, (state, nbrs), None, length=block)
        return state, nbrs, (observe(state, nbrs) if observe else 0.0)

    obs, realloc, done, t_start = [], 0, 0, None
    bar = Progress(label, n_blocks * block)
    while done < n_blocks:
        new, new_nbrs, o = run(state, nbrs)
        if bool(new_nbrs[0].did_buffer_overflow) or bool(new_nbrs[1].did_buffer_overflow):
            nbrs = model.allocate(state.position, **kw(state))
            realloc += 1
            continue
        jax.block_until_ready(new.position)
        if t_start is None:
            t_start = time.perf_counter()          # after the first block: compiled
        else:
            obs.append(jax.tree_util.tree_map(np.asarray, o))
        state, nbrs = new, new_nbrs
        done += 1
        bar(done * block)
    return state, nbrs, obs, time.perf_counter() - t_start, realloc


# --------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------
def rel_rms(a, b):
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1)) / np.mean(np.sum(b**2, axis=1))))


def reference_forces(pos, species, cell):
    return JaxModel(pos, species, cell, dtype="float64", accuracy=1e-9).coulomb_forces()


def openmm_coulomb_error(pos, species, cell, tolerance, platform_name, threads, ref):
    import openmm

    ctx = openmm_context(openmm_system(species, cell, tolerance), openmm.VerletIntegrator(0.001), platform_name,
                         threads)
    ctx.setPositions(pos / 10.0)
    f = np.asarray(ctx.getState(getForces=True, groups={0}).getForces(asNumpy=True)._value) / KJ_MOL_PER_EV / 10
    return rel_rms(f, ref)


def matched_openmm_tolerance(pos, species, cell, threads, ref, target=1e-4):
    for tol in (1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5):
        err = openmm_coulomb_error(pos, species, cell, tol, "CPU", threads, ref)
        if err <= target:
            return tol, err
    return tol, err


def matched_jaxlr(pos, species, cell, dtype, ref, target, short_range="truncated"):
    for acc in (target, target / 2, target / 5, target / 10):
        model = JaxModel(pos, species, cell, dtype=dtype, accuracy=acc, short_range=short_range)
        err = rel_rms(model.coulomb_forces(), ref)
        if err <= target:
            return model, acc, err
    return model, acc, err


# --------------------------------------------------------------------------------------
# parts
# --------------------------------------------------------------------------------------
def jax_nve_speed(model, vel, steps, block, dt_fs=2.0):
    from jax_md import simulate

    init, step = simulate.nve(model.energy, model.shift, dt_fs / TAU_FS)
    nbrs = model.allocate(model.R)
    state = init(jax.random.PRNGKey(0), model.R, 0.1, mass=model.mass, neighbor=nbrs)
    state = state.set(momentum=model.momenta(vel))
    n_blocks = max(1, steps // block)
    _, _, _, seconds, realloc = run_blocks(step, state, nbrs, model, n_blocks + 1, block,
                                           label=f"jaxlr {model.dtype.__name__} NVE")
    return n_blocks * block / seconds, realloc


def openmm_nve_speed(pos, vel, species, cell, tolerance, platform_name, threads, steps, dt_fs=2.0):
    import openmm

    integ = openmm.VerletIntegrator(dt_fs / 1000.0)
    ctx = openmm_context(openmm_system(species, cell, tolerance), integ, platform_name, threads)
    ctx.setPositions(pos / 10.0)
    ctx.setVelocities(vel * 100.0)
    integ.step(10)                         # warm-up
    t = time.perf_counter()
    bar = Progress(f"OpenMM {platform_name} NVE", steps)
    for k in range(0, steps, 50):
        integ.step(min(50, steps - k))
        bar(min(k + 50, steps))
    return steps / (time.perf_counter() - t)


def part_speed(args):
    rows = []
    for n in args.sizes:
        pos, vel, species, cell = melt(n, args.melt_ps, args.threads)
        ref = reference_forces(pos, species, cell)
        tol, err_mm = matched_openmm_tolerance(pos, species, cell, args.threads, ref)
        mm = openmm_nve_speed(pos, vel, species, cell, tol, "CPU", args.threads, args.steps)
        m32, acc32, err32 = matched_jaxlr(pos, species, cell, "float32", ref, 1e-4)
        s32, r32 = jax_nve_speed(m32, vel, args.steps, args.block)
        m64, acc64, err64 = matched_jaxlr(pos, species, cell, "float64", ref, 1e-5)
        s64, r64 = jax_nve_speed(m64, vel, args.steps, args.block)
        rows.append((n, mm, tol, err_mm, s32, acc32, err32, r32, s64, acc64, err64, r64))
    print(f"\n## NVE speed (steps/s, dt 2 fs, 1,200 K liquid) — {machine()}; OpenMM CPU threads={args.threads}")
    print("| ions | OpenMM CPU | (tolerance → measured) | jaxlr f32 | (accuracy → measured) | f32 / OpenMM "
          "| jaxlr f64 | (accuracy → measured) |")
    print("|---:|---:|---|---:|---|---:|---:|---|")
    for n, mm, tol, emm, s32, a32, e32, r32, s64, a64, e64, r64 in rows:
        print(f"| {n} | {mm:.1f} | {tol:g} → {emm:.1e} | {s32:.1f} | {a32:g} → {e32:.1e} | {s32 / mm:.2f} | "
              f"{s64:.1f} | {a64:g} → {e64:.1e} |")


def jax_nve_energies(model, vel, dt_fs, ps, block):
    from jax_md import quantity, simulate

    init, step = simulate.nve(model.energy, model.shift, dt_fs / TAU_FS)
    nbrs = model.allocate(model.R)
    state = init(jax.random.PRNGKey(0), model.R, 0.1, mass=model.mass, neighbor=nbrs)
    state = state.set(momentum=model.momenta(vel))

    def observe(s, nb):
        return model.energy(s.position, nb) + quantity.kinetic_energy(momentum=s.momentum, mass=s.mass)

    e0 = float(observe(state, nbrs))
    n_blocks = int(round(ps * 1000 / dt_fs / block))
    _, _, obs, _, _ = run_blocks(step, state, nbrs, model, n_blocks + 1, block, observe,
                                 label=f"jaxlr {model.dtype.__name__} NVE dt={dt_fs:g} fs")
    return np.concatenate([[e0], np.asarray(obs, np.float64)]), block * dt_fs / 1000.0


def openmm_nve_energies(pos, vel, species, cell, tolerance, platform_name, threads, dt_fs, ps, block):
    import openmm

    integ = openmm.VerletIntegrator(dt_fs / 1000.0)
    ctx = openmm_context(openmm_system(species, cell, tolerance), integ, platform_name, threads)
    ctx.setPositions(pos / 10.0)
    ctx.setVelocities(vel * 100.0)
    n_blocks = int(round(ps * 1000 / dt_fs / block))
    out = []
    bar = Progress(f"OpenMM {platform_name} NVE dt={dt_fs:g} fs", n_blocks * block)
    for k in range(n_blocks + 1):
        if k:
            integ.step(block)
        _, _, _, pe, ke = openmm_state(ctx)
        out.append(pe + ke)
        bar(k * block)
    return np.asarray(out), block * dt_fs / 1000.0


def drift_stats(energies, dt_ps, n):
    """(drift meV/atom/ps, its standard error, fluctuation meV/atom) of energies every dt_ps."""
    d = energy_drift(np.arange(len(energies)) * dt_ps, energies, n)
    return d.slope, d.stderr, d.fluctuation


def _jaxlr_drift(pos, species, cell, vel, dtype, ref, target, dt, ps, block, short_range="truncated"):
    model, acc, _ = matched_jaxlr(pos, species, cell, dtype, ref, target, short_range)
    return f"{acc:g}", jax_nve_energies(model, vel, dt, ps, block)


def part_drift(args):
    n = args.drift_n
    pos, vel, species, cell = melt(n, args.melt_ps, args.threads)
    ref = reference_forces(pos, species, cell)
    tol_cpu, _ = matched_openmm_tolerance(pos, species, cell, args.threads, ref)
    rows = []
    tag = "" if args.short_range == "truncated" else f" ({args.short_range} short range)"
    runs = {
        "f64": lambda dt, block: ("jaxlr float64" + tag, *_jaxlr_drift(
            pos, species, cell, vel, "float64", ref, args.f64_force_error, dt, args.drift_ps, block, args.short_range)),
        "f32": lambda dt, block: ("jaxlr float32" + tag, *_jaxlr_drift(
            pos, species, cell, vel, "float32", ref, 1e-4, dt, args.drift_ps, block, args.short_range)),
        "reference": lambda dt, block: ("OpenMM Reference", "1e-05", openmm_nve_energies(
            pos, vel, species, cell, 1e-5, "Reference", args.threads, dt, args.drift_ps, block)),
        "cpu": lambda dt, block: ("OpenMM CPU", f"{tol_cpu:g}", openmm_nve_energies(
            pos, vel, species, cell, tol_cpu, "CPU", args.threads, dt, args.drift_ps, block)),
    }
    for dt in args.dts:
        block = max(1, int(round(10 / dt)))              # an energy every 10 fs
        for code in args.drift_codes:                    # in the order given, each row printed when done
            set_precision("float64")
            label, acc, series = runs[code](dt, block)
            rows.append((label, acc, dt, *drift_stats(*series, n)))
            print(f"# done: {label}, PME {acc}, dt {dt:g} fs: drift {rows[-1][3]:+.2e} ± {rows[-1][4]:.1e} "
                  f"meV/atom/ps, fluctuation {rows[-1][5]:.2e} meV/atom", flush=True)
    print(f"\n## NVE energy drift, {n} ions, 1,200 K liquid, {args.drift_ps:g} ps — {machine()}")
    print("| code | PME accuracy | dt (fs) | drift (meV/atom/ps) | ± | fluctuation (meV/atom) |")
    print("|---|---|---:|---:|---:|---:|")
    for code, acc, dt, slope, err, fluct in rows:
        print(f"| {code} | {acc} | {dt:g} | {slope:+.2e} | {err:.1e} | {fluct:.2e} |")


def part_nvt(args):
    import openmm
    from jax_md import quantity, simulate

    n = args.drift_n
    pos, vel, species, cell = melt(n, args.melt_ps, args.threads)
    kT = KB * TEMPERATURE
    dt_fs, gamma_ps, sample_fs = 2.0, 5.0, 20.0
    block = int(sample_fs / dt_fs)
    n_blocks = int(round(args.nvt_ps * 1000 / sample_fs))
    model = JaxModel(pos, species, cell, dtype="float64", accuracy=1e-5)
    init, step = simulate.nvt_langevin(model.energy, model.shift, dt_fs / TAU_FS, kT, gamma=gamma_ps * TAU_FS / 1000)
    nbrs = model.allocate(model.R)
    state = init(jax.random.PRNGKey(1), model.R, mass=model.mass, neighbor=nbrs)
    state = state.set(momentum=model.momenta(vel))
    volume = abs(np.linalg.det(cell))

    def observe(s, nb):
        ke = quantity.kinetic_energy(momentum=s.momentum, mass=s.mass)
        return (model.energy(s.position, nb), ke,
                quantity.pressure(model.energy, s.position, model.box, kinetic_energy=ke, neighbor=nb))

    _, _, obs, _, _ = run_blocks(step, state, nbrs, model, n_blocks + 1, block, observe,
                                 label=f"jaxlr NVT {args.nvt_ps:g} ps")
    pe_j, ke_j, p_j = (np.array([o[k] for o in obs], np.float64) for k in range(3))
    p_j = p_j * EV_A3_IN_GPA

    integ = openmm.LangevinMiddleIntegrator(TEMPERATURE, gamma_ps, dt_fs / 1000)
    integ.setRandomNumberSeed(7)
    baro = openmm.MonteCarloBarostat(1.0, TEMPERATURE, 0)      # frequency 0: only for computeCurrentPressure
    ctx = openmm_context(openmm_system(species, cell, 1e-5, barostat=baro), integ, "CPU", args.threads)
    ctx.setPositions(pos / 10.0)
    ctx.setVelocities(vel * 100.0)
    pe_o, ke_o, p_o = [], [], []
    bar = Progress(f"OpenMM NVT {args.nvt_ps:g} ps", n_blocks)
    for k in range(n_blocks):
        integ.step(block)
        _, _, _, pe, ke = openmm_state(ctx)
        pe_o.append(pe)
        ke_o.append(ke)
        p_o.append(baro.computeCurrentPressure(ctx).value_in_unit(openmm.unit.bar) * 1e-4)   # bar → GPa
        bar(k + 1)
    print(f"\n## NVT (Langevin, 1,200 K, γ = {gamma_ps:g}/ps, dt {dt_fs:g} fs), {n} ions, {args.nvt_ps:g} ps, "
          f"V = {volume:.0f} Å³ — {machine()}")
    print("| code | ⟨U⟩ (eV/ion) | ⟨P⟩ (GPa) | ⟨K⟩ / (3N/2 kT) | var K / (3N/2 (kT)²) |")
    print("|---|---:|---:|---:|---:|")
    for code, pe, ke, p in (("jaxlr f64 (1e-5)", pe_j, ke_j, p_j), ("OpenMM CPU (1e-5)", pe_o, ke_o, p_o)):
        pe, ke, p = np.asarray(pe), np.asarray(ke), np.asarray(p)
        print(f"| {code} | {pe.mean() / n:.4f} ± {block_error(pe) / n:.4f} | {p.mean():.3f} ± {block_error(p):.3f} | "
              f"{ke.mean() / (1.5 * n * kT):.4f} | {ke.var() / (1.5 * n * kT**2):.3f} |")


def part_npt(args):
    import openmm
    from jax_md import simulate

    n = args.drift_n
    pos, vel, species, cell = melt(n, args.melt_ps, args.threads)
    kT = KB * TEMPERATURE
    dt_fs, sample_fs = 2.0, 20.0
    block = int(sample_fs / dt_fs)
    n_blocks = int(round(args.npt_ps * 1000 / sample_fs))
    mass_g = float(np.sum(np.asarray([22.98976928, 35.45])[species])) / 6.02214076e23
    model = JaxModel(pos, species, cell, dtype="float64", accuracy=1e-5)
    p_bar = 1.0 / 1e4 / EV_A3_IN_GPA                   # 1 bar in eV/Å³
    init, step = simulate.npt_nose_hoover(model.energy, model.shift, dt_fs / TAU_FS, pressure=p_bar, kT=kT)
    nbrs = model.allocate(model.R)
    state = init(jax.random.PRNGKey(2), model.R, model.box, mass=model.mass, neighbor=nbrs)
    state = state.set(momentum=model.momenta(vel))
    _, _, obs, _, _ = run_blocks(step, state, nbrs, model, n_blocks + 1, block,
                                 observe=lambda s, nb: simulate.npt_box(s), box_of=simulate.npt_box,
                                 label=f"jaxlr NPT {args.npt_ps:g} ps")
    rho_j = np.array([mass_g / (abs(np.linalg.det(np.asarray(b, np.float64))) * 1e-24) for b in obs])

    integ = openmm.LangevinMiddleIntegrator(TEMPERATURE, 5.0, dt_fs / 1000)
    baro = openmm.MonteCarloBarostat(1.0, TEMPERATURE, 25)
    ctx = openmm_context(openmm_system(species, cell, 1e-5, barostat=baro), integ, "CPU", args.threads)
    ctx.setPositions(pos / 10.0)
    ctx.setVelocities(vel * 100.0)
    rho_o = []
    bar = Progress(f"OpenMM NPT {args.npt_ps:g} ps", n_blocks)
    for k in range(n_blocks):
        integ.step(block)
        c = openmm_state(ctx)[2]
        rho_o.append(mass_g / (abs(np.linalg.det(c)) * 1e-24))
        bar(k + 1)
    half = n_blocks // 2
    print(f"\n## NPT (1,200 K, 1 bar), {n} ions, {args.npt_ps:g} ps, density from the second half — {machine()}")
    print("| code | ⟨ρ⟩ (g/cm³) |")
    print("|---|---:|")
    for code, rho in (("jaxlr + jax-md npt_nose_hoover (1e-5)", rho_j), ("OpenMM MonteCarloBarostat (1e-5)",
                                                                          np.asarray(rho_o))):
        r = rho[half:]
        print(f"| {code} | {r.mean():.4f} ± {block_error(r):.4f} |")


def part_qeq(args):
    import jax.numpy as jnp
    from jax_md import quantity

    from jaxlr.md import NACL_QEQ, qeq_neighbor_list, qeq_nve

    n = args.drift_n
    pos, vel, species, cell = melt(n, args.melt_ps, args.threads)
    fixed = JaxModel(pos, species, cell, dtype="float64", accuracy=1e-5)
    speed_fixed, _ = jax_nve_speed(fixed, vel, args.steps, args.block, dt_fs=1.0)
    chi, hard, sig = (np.asarray(x)[species] for x in NACL_QEQ)
    n_blocks = max(1, int(round(args.qeq_ps * 1000 / args.block)))        # dt = 1 fs

    def run(tol, xl_order):
        """NVE of Qeq + Tosi–Fumi at PCG tolerance ``tol``: (steps/s, iterations, ⟨|q|⟩,
        total energies every ``block`` fs)."""
        nfn_q, qeq = qeq_neighbor_list(fixed.displacement, fixed.box, electronegativity=chi, hardness=hard,
                                       sigma=sig, accuracy=1e-5, tol=tol, positions_for_tuning=fixed.R)

        class QeqModel:
            def allocate(self, R, **kw):
                return (nfn_q.allocate(R, **kw), fixed.nfn_s.allocate(R, **kw))

            def update(self, R, nbrs, **kw):
                return (nfn_q.update(R, nbrs[0], **kw), fixed.nfn_s.update(R, nbrs[1], **kw))

        def make(nbrs):
            def other(r, neighbor=None, **kw):
                return fixed.short(r, nbrs[1], **kw)
            return qeq_nve(qeq, fixed.shift, 1.0 / TAU_FS, xl_order=xl_order, other_energy_fn=other)

        def step(state, neighbor, **kw):
            return make(neighbor)[1](state, neighbor=neighbor[0])

        def observe(s, nb):
            etot = s.energy + quantity.kinetic_energy(momentum=s.momentum, mass=s.mass)
            return s.iterations, jnp.abs(s.charges).mean(), etot

        model = QeqModel()
        nbrs = model.allocate(fixed.R)
        state = make(nbrs)[0](jax.random.PRNGKey(0), fixed.R, None, fixed.mass, neighbor=nbrs[0],
                              momenta=fixed.momenta(vel))
        _, _, obs, seconds, _ = run_blocks(step, state, nbrs, model, n_blocks + 1, args.block, observe=observe,
                                           label=f"jaxlr Qeq NVE tol {tol:g} xl {xl_order}")
        iters = np.array([o[0] for o in obs])
        energies = np.array([o[2] for o in obs], np.float64)
        return n_blocks * args.block / seconds, iters, float(np.mean([o[1] for o in obs])), energies

    rows = [(tol, xl, *run(tol, xl)) for tol, xl in ((1e-8, 5), (1e-3, 5), (1e-3, 0))]
    print(f"\n## Qeq MD (toy NACL_QEQ + Tosi–Fumi, dt 1 fs, {args.qeq_ps:g} ps), {n} ions, float64, PME 1e-5 — "
          f"{machine()}")
    print("| model | PCG tolerance | warm start | steps/s | cost / fixed-charge step | PCG iterations per step "
          "(sampled) | ⟨|q|⟩ (e) | drift (meV/atom/ps) | ± | fluctuation (meV/atom) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| fixed ±1 charges | – | – | {speed_fixed:.1f} | 1 | – | 1 | | | |")
    for tol, xl, speed, iters, q, energies in rows:
        slope, err, fluct = drift_stats(energies, args.block / 1000.0, n)
        start = "XL-BOMD order 5" if xl else "previous charges"
        print(f"| Qeq | {tol:g} | {start} | {speed:.1f} | {speed_fixed / speed:.2f} | {iters.mean():.1f} "
              f"(min {iters.min()}, max {iters.max()}) | {q:.3f} | {slope:+.2e} | {err:.1e} | {fluct:.2e} |")


PARTS = {"speed": part_speed, "drift": part_drift, "nvt": part_nvt, "npt": part_npt, "qeq": part_qeq}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="speed", help=f"comma-separated subset of {','.join(PARTS)} (default speed)")
    ap.add_argument("--sizes", default="1000,4096", help="ion counts for the speed part (even), e.g. 1000,4096,16384")
    ap.add_argument("--drift-n", type=int, default=512, help="ions for drift, nvt, npt and qeq")
    ap.add_argument("--drift-ps", type=float, default=1.0, help="NVE length per run (the issue asks 20 ps)")
    ap.add_argument("--dts", default="1,2", help="NVE time steps (fs)")
    ap.add_argument("--drift-codes", default="f64,f32,reference,cpu",
                    help="which runs the drift part makes, in this order: jaxlr f64, f32, OpenMM reference, cpu (the "
                         "Reference platform takes hours at 4,096 ions)")
    ap.add_argument("--short-range", choices=("truncated", "shifted-force"), default="truncated",
                    help="drift part, jaxlr runs only: the Tosi-Fumi term as OpenMM has it (truncated at the "
                         "cutoff) or shifted-force (continuous; a diagnostic of the truncation's share of the drift)")
    ap.add_argument("--f64-force-error", type=float, default=1e-5,
                    help="drift part: Coulomb-force error the float64 PME is tuned to (relative RMS)")
    ap.add_argument("--nvt-ps", type=float, default=2.0)
    ap.add_argument("--npt-ps", type=float, default=5.0)
    ap.add_argument("--melt-ps", type=float, default=2.0, help="OpenMM Langevin melting before each part")
    ap.add_argument("--qeq-ps", type=float, default=2.0, help="NVE length of each Qeq run (tight, loose, no XL)")
    ap.add_argument("--steps", type=int, default=200, help="timed steps in the speed and qeq parts")
    ap.add_argument("--block", type=int, default=20, help="jax-md steps per jitted block")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="OpenMM CPU threads")
    args = ap.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    args.dts = [float(x) for x in args.dts.split(",") if x]
    args.drift_codes = list(dict.fromkeys(c.strip().lower() for c in args.drift_codes.split(",") if c.strip()))
    if not set(args.drift_codes) <= {"f64", "f32", "reference", "cpu"}:
        ap.error(f"--drift-codes takes f64, f32, reference, cpu; got {sorted(args.drift_codes)}")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {sorted(PARTS)}")
    print(f"# bench_md — {machine()}; jax {jax.__version__}")
    try:
        import openmm
        print(f"# OpenMM {openmm.__version__}")
    except ImportError:
        ap.error("OpenMM is needed: pip install openmm")
    for p in parts:
        PARTS[p](args)


if __name__ == "__main__":
    main()
