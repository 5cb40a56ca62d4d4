"""jaxlr beyond one device: timings, agreement and per-device memory (plain script).

The script for a multi-accelerator machine (e.g. 8×H100); run it there as

    python benchmarks/bench_devices.py --n 200000 --devices 1 2 4 8

On a CPU it forces ``--host-devices`` (default 4) host devices through
``XLA_FLAGS=--xla_force_host_platform_device_count`` before jax is imported.  Those
"devices" share the same cores and memory, so on a CPU the script shows **correctness and
memory only**: its timings say nothing about speed-up.

Several hosts (or several processes on one): start the same command in every process
with ``JAXLR_COORDINATOR=host0:PORT JAXLR_NUM_PROCESSES=K JAXLR_PROCESS_ID=k`` set; the
script calls ``jaxlr.parallel.initialize_distributed()`` first, ``--devices`` then counts
the devices of all processes, and process 0 prints (and alone runs the one-device
reference).

Three parts:

1. one periodic system across P devices (``jaxlr.parallel.coulomb_sharded``: real-space
   rows by atom, PME mesh in slabs, distributed FFT): energy + forces + stress, time per
   evaluation (median after a warm-up, compilation separate), and the largest relative
   difference from the one-device ``jaxlr.coulomb`` with the same parameters;
2. the per-device buffer sizes of the compiled evaluation from XLA's memory analysis
   (``jaxlr.parallel.sharded_memory``) — they must fall as P grows;
3. data-parallel model evaluation: a batch of structures split over P devices
   (``jaxlr.parallel.predict_sharded``), time per batch.

Run:  python benchmarks/bench_devices.py [--n 20000] [--devices 1 2 4] [--accuracy 1e-4]
      [--dtype float64] [--repeat 5] [--host-devices 4] [--skip-reference]
"""

import argparse
import builtins
import os
import statistics
import sys
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="atoms of the periodic system")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4], help="device counts to run")
    ap.add_argument("--accuracy", type=float, default=1e-4, help="relative RMS force error of the PME")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=5, help="timed evaluations per device count")
    ap.add_argument("--host-devices", type=int, default=4, help="host devices to force on a CPU")
    ap.add_argument("--skip-reference", action="store_true", help="do not run the one-device jaxlr.coulomb")
    return ap.parse_args()


def main():
    args = parse()
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.host_devices}").strip()
    import jax

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    import jax.numpy as jnp
    import numpy as np

    import jaxlr
    from jaxlr.parallel import (
        divisible_mesh,
        gather_global,
        initialize_distributed,
        predict_sharded,
        shard_system,
        sharded_coulomb_terms,
        sharded_memory,
    )
    from jaxlr.testing import random_ionic_system

    initialize_distributed()          # several processes: JAXLR_COORDINATOR etc.; otherwise nothing
    lead = jax.process_index() == 0

    print = builtins.print if lead else (lambda *a, **k: None)       # noqa: A001 — process 0 alone prints

    devices = jax.devices()
    platform = devices[0].platform
    # with K processes a count must be a multiple of K (the same number of devices in each)
    counts = [p for p in args.devices if p <= len(devices) and p % jax.process_count() == 0]
    print(f"jaxlr {jaxlr.__version__}, jax {jax.__version__}: {len(devices)} {platform} device(s) in "
          f"{jax.process_count()} process(es), {args.dtype}")
    if platform == "cpu":
        print("CPU host devices share the same cores and memory: the numbers below show correctness and "
              "memory only, not speed-up.")
    pos, q, cell = random_ionic_system(args.n, seed=0)

    # ---- 1. one system across devices -------------------------------------------------------
    params = jaxlr.tune_coulomb(pos, q, cell, method="pme", accuracy=args.accuracy, dtype=args.dtype)
    # one mesh for every device count: the tuned one enlarged to a multiple of each count
    mesh = params.mesh._replace(shape=divisible_mesh(params.mesh.shape, int(np.lcm.reduce(counts))))
    print(f"\n1. N = {args.n:,} ±1 charges, PME mesh {mesh.shape}, order {mesh.order}, cutoff {params.cutoff:.2f} Å, "
          f"smearing {params.smearing:.3f} Å (accuracy {args.accuracy:g})")
    ref = None
    if not args.skip_reference and lead:
        ref = jaxlr.coulomb(jnp.asarray(pos, args.dtype), jnp.asarray(q, args.dtype), cell=jnp.asarray(cell, args.dtype),
                            method="pme", smearing=params.smearing, cutoff=params.cutoff, mesh=mesh)
    print(f"   {'P':>3s} {'slots/dev':>9s} {'compile/s':>9s} {'time/ms':>9s} {'max rel. diff E, F, stress':>30s}")
    for p in counts:
        system = shard_system(pos, q, cell, spec=mesh, cutoff=params.cutoff, devices=p, dtype=jnp.dtype(args.dtype))

        def call():
            return jax.block_until_ready(sharded_coulomb_terms(system, cell, params.smearing))

        t0 = time.perf_counter()
        energy, _, forces, stress = gather_global(call())
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        diff = "-"
        if ref is not None:
            f_atoms = np.asarray(system.layout.unpad(forces))

            def rel(a, b):
                return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))

            diff = (f"{rel(energy, ref.energy):.1e}, {rel(f_atoms, ref.forces):.1e}, "
                    f"{rel(stress, ref.stress):.1e}")
        print(f"   {p:3d} {system.layout.capacity:9d} {first:9.1f} {1e3 * statistics.median(times):9.1f} {diff:>30s}")

    # ---- 2. memory per device ---------------------------------------------------------------
    print("\n2. Per-device buffers of the compiled energy + forces + stress (XLA memory analysis, MB):")
    print(f"   {'P':>3s} {'arguments':>10s} {'outputs':>8s} {'temporaries':>11s} {'total':>8s} {'× P=' + str(counts[0]):>6s}")
    rows = sharded_memory(pos, q, cell, devices=tuple(counts), accuracy=args.accuracy, dtype=args.dtype,
                          mesh=mesh, smearing=params.smearing, cutoff=params.cutoff)
    for row in rows:
        print(f"   {row['devices']:3d} {row['arguments'] / 1e6:10.2f} {row['outputs'] / 1e6:8.2f} "
              f"{row['temporaries'] / 1e6:11.2f} {row['total'] / 1e6:8.2f} {row['total'] / rows[0]['total']:6.2f}")

    # ---- 3. data-parallel model evaluation ----------------------------------------------------
    from jaxlr.data import Dataset, Structure, make_batches
    from jaxlr.models import build_potential

    rng = np.random.default_rng(1)
    structures = [Structure(positions=rng.random((24, 3)) * 6.0, numbers=rng.choice([1, 8], 24)) for _ in range(64)]
    pot = build_potential("local", species=(1, 8), local=dict(cutoff=3.0, max_radial=4, max_angular=3), hidden=(32, 32))
    batch = make_batches(Dataset(structures), pot.species, cutoff=pot.cutoff, batch_size=64)[0][0]
    variables = pot.init(jax.random.PRNGKey(0), batch)
    print("\n3. Model evaluation, one batch of 64 structures × 24 atoms (local model), energies + forces:")
    print(f"   {'P':>3s} {'compile/s':>9s} {'time/ms':>9s}")
    for p in counts:
        t0 = time.perf_counter()
        jax.block_until_ready(predict_sharded(pot, variables, batch, devices=p).forces)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            jax.block_until_ready(predict_sharded(pot, variables, batch, devices=p).forces)
            times.append(time.perf_counter() - t0)
        print(f"   {p:3d} {first:9.1f} {1e3 * statistics.median(times):9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
