"""``jaxlr md``: molecular dynamics from the command line (a thin layer over :func:`jaxlr.md.run_md`)."""

from __future__ import annotations

import argparse

__all__ = ["MD_DESCRIPTION", "MD_EPILOG", "add_md_parser", "run_md_command"]

MD_DESCRIPTION = """\
Molecular dynamics with jax-md and a jaxlr energy: NVE, NVT (Nose-Hoover chain or
Langevin) or NPT (Nose-Hoover barostat), run in jitted chunks of --thermo-every steps.

Energy models (--model):
  nacl       Tosi-Fumi NaCl: Born-Mayer-Huggins short range (shifted-force at --cutoff)
             + +-1 e point charges (PME)
  nacl-qeq   the same short range + charges equilibrated every step (Qeq, PCG; a toy)
  DIR        a trained checkpoint folder (jaxlr fit / jaxlr.train.save) or its run folder

Writes into --out: thermo.csv (one row per chunk), trajectory.extxyz (ASE-readable:
positions, momenta/velocities, charges, cell; forces with --forces), restart.npz (for
--restart), energy.png, temperature.png, pressure_volume.png."""

MD_EPILOG = """\
units: Angstrom, eV, amu; --dt, --tau-t, --tau-p in fs; --temperature in K; --pressure in
bar (1 bar = 1e5 Pa = 6.2415e-7 eV/A^3); thermo.csv time in ps, density in g/cm^3.

thermo.csv columns: step, time_ps, temperature_K (3N degrees of freedom), potential_eV,
kinetic_eV, total_eV, conserved_eV (NVE: total; Nose-Hoover: jax-md's invariant;
Langevin: nan), pressure_bar (virial), volume_A3, density_g_cm3; Qeq adds
pcg_iterations and total_charge_e.

examples:
  jaxlr md --model nacl --ions 512 --ensemble nvt-langevin --temperature 1200 --steps 5000 --out melt
  jaxlr md --model nacl --restart melt/restart.npz --ensemble nve --steps 5000 --out melt-nve
  jaxlr md crystal.cif --model runs/nacl/checkpoint --ensemble npt --temperature 300 --pressure 1 --out npt"""


def add_md_parser(sub) -> argparse.ArgumentParser:
    """Add the ``md`` subcommand to an argparse subparsers object; returns its parser.

    Example:
      >>> import argparse
      >>> sub = argparse.ArgumentParser(prog="jaxlr").add_subparsers(dest="command")
      >>> args = add_md_parser(sub).parse_args(["--model", "nacl", "--ions", "64", "--temperature", "1200"])
      >>> args.ensemble, args.dt, args.ions, args.out
      ('nve', 2.0, 64, 'md')
    """
    m = sub.add_parser("md", help="molecular dynamics (NVE/NVT/NPT) with a built-in or trained model",
                       description=MD_DESCRIPTION, epilog=MD_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("structure", nargs="?", default=None,
                   help="structure file read by ASE (last frame), periodic; omit with --ions or --restart")
    m.add_argument("--model", required=True, help="nacl | nacl-qeq | a checkpoint folder")
    m.add_argument("--ensemble", default="nve", choices=("nve", "nvt-nh", "nvt-langevin", "npt"),
                   help="nve (velocity Verlet), nvt-nh (Nose-Hoover chain), nvt-langevin (BAOAB), npt "
                        "(Nose-Hoover, isotropic); default nve")
    m.add_argument("--temperature", type=float, default=None,
                   help="K: thermostat target and temperature of the initial velocities (required unless NVE starts "
                        "from velocities in the structure or restart)")
    m.add_argument("--pressure", type=float, default=None, help="bar, NPT only (default 1 bar)")
    m.add_argument("--dt", type=float, default=2.0, help="time step in fs (default 2)")
    m.add_argument("--steps", type=int, default=1000, help="number of MD steps of this run (default 1000)")
    m.add_argument("--thermo-every", type=int, default=10,
                   help="steps per jitted chunk and per thermo.csv row (default 10)")
    m.add_argument("--traj-every", type=int, default=None,
                   help="steps between trajectory frames, a multiple of --thermo-every (default 10 x thermo-every)")
    m.add_argument("--out", default="md", help="output folder (default ./md)")
    m.add_argument("--seed", type=int, default=0, help="random seed: velocities, Langevin noise, generated box")
    m.add_argument("--accuracy", type=float, default=1e-5,
                   help="relative RMS force accuracy of the PME electrostatics (default 1e-5)")
    m.add_argument("--float32", action="store_true", help="run in float32 (default float64)")
    m.add_argument("--restart", default=None, metavar="FILE",
                   help="continue from a restart.npz (exact with the same ensemble, model and precision)")
    m.add_argument("--ions", type=int, default=None,
                   help="built-in NaCl models: generate a box of this many ions at the melt density (no structure)")
    m.add_argument("--cutoff", type=float, default=None,
                   help="Tosi-Fumi short-range cutoff in A (built-ins; default min(9, half box - skin))")
    m.add_argument("--tau-t", type=float, default=None,
                   help="thermostat time constant in fs (default 100 dt); Langevin friction = 1/tau-t")
    m.add_argument("--tau-p", type=float, default=None, help="barostat time constant in fs (default 1000 dt)")
    m.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin in A (default 0.5)")
    m.add_argument("--forces", action="store_true", help="also write forces into the trajectory")
    m.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    m.add_argument("--quiet", action="store_true", help="no progress line")
    return m


def run_md_command(args) -> None:
    """Run ``jaxlr md`` for parsed arguments (:func:`jaxlr.md.run_md`) and print a summary.

    Bad arguments raise ``ValueError`` before anything compiles (``jaxlr.cli.main`` prints
    them and returns 2).

    Example:
      >>> import argparse
      >>> sub = argparse.ArgumentParser(prog="jaxlr").add_subparsers(dest="command")
      >>> args = add_md_parser(sub).parse_args(["--model", "nacl", "--ions", "64", "--temperature", "-5"])
      >>> run_md_command(args)
      Traceback (most recent call last):
      ...
      ValueError: temperature must be > 0 (K), got -5.0.
    """
    from ..md import run_md

    res = run_md(args.structure, args.model, ensemble=args.ensemble, temperature=args.temperature,
                 pressure=args.pressure, dt=args.dt, steps=args.steps, thermo_every=args.thermo_every,
                 traj_every=args.traj_every, out=args.out, seed=args.seed, accuracy=args.accuracy,
                 dtype="float32" if args.float32 else "float64", restart=args.restart, tau_t=args.tau_t,
                 tau_p=args.tau_p, cutoff=args.cutoff, n_ions=args.ions, dr_threshold=args.skin,
                 write_forces=args.forces, plots=not args.no_plots, progress=not args.quiet)
    last = {k: float(v[-1]) for k, v in res.thermo.items()}
    print(f"step {res.step}: T {last['temperature_K']:.1f} K, E_total {last['total_eV']:.6f} eV, "
          f"P {last['pressure_bar']:.1f} bar, V {last['volume_A3']:.2f} A^3; {res.steps_per_second:.1f} steps/s "
          f"(compilation {res.compile_seconds:.1f} s)")
    print(f"output folder: {res.out}")
