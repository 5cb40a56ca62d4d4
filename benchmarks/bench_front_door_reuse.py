"""How often the front door recompiles for a moving system (plain script).

A rock-salt crystal of 8k³ ±1 charges with Gaussian disorder (default 0.5 Å, liquid-like
neighbour counts) is moved by Gaussian steps (default 0.05 Å per atom and axis) and
``jaxlr.coulomb(..., method="pme", accuracy=...)`` is called after every step, twice
over the same trajectory:

* **fresh**: no plan, so every call tunes its parameters and sizes its neighbour list
  from scratch (the front door without a plan is stateless);
* **plan**: ``plan = jaxlr.tuning.plan_coulomb(...)`` once, then ``plan, kept =
  plan.update(...)`` and ``jaxlr.coulomb(..., plan=plan)`` per step: the parameters and
  list capacity are kept while they still meet the accuracy.  The update's host time
  (error estimate and neighbour count) is included in the call time.

For each it prints the number of compilations (growth of the compiled-function cache of
``jaxlr.coulomb``'s core), the number of distinct meshes and cutoffs used, and the median
and total wall time of the calls.

Run:  python benchmarks/bench_front_door_reuse.py [--k 8] [--steps 30] [--accuracy 1e-5]
"""

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import jaxlr  # noqa: E402
from jaxlr._api.coulomb import evaluate_coulomb  # noqa: E402
from jaxlr.tuning import plan_coulomb  # noqa: E402


def rocksalt(k, a=5.64, disorder=0.5, seed=0):
    frac = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5],
                     [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = ((grid[:, None, :] + frac[None]) * a).reshape(-1, 3)
    pos = pos + np.random.default_rng(seed).normal(0.0, disorder, pos.shape)
    return pos, np.tile([1.0] * 4 + [-1.0] * 4, len(grid)), np.eye(3) * a * k


def run(mode, pos, q, cell, steps, step, accuracy):
    rng = np.random.default_rng(1)
    before = evaluate_coulomb._cache_size()
    times, meshes, cutoffs = [], set(), set()
    plan = None
    for _ in range(steps):
        t = time.perf_counter()
        if mode == "fresh":
            res = jaxlr.coulomb(pos, q, cell=cell, method="pme", accuracy=accuracy)
        else:
            if plan is None:
                plan = plan_coulomb(pos, q, cell=cell, method="pme", accuracy=accuracy)
            else:
                plan, _ = plan.update(pos, q, cell=cell)
            res = jaxlr.coulomb(pos, q, cell=cell, plan=plan)
        jax.block_until_ready(res.forces)
        times.append(time.perf_counter() - t)
        meshes.add(res.params.mesh)
        cutoffs.add(round(res.params.cutoff, 6))
        pos = pos + rng.normal(0.0, step, pos.shape)
    return evaluate_coulomb._cache_size() - before, len(meshes), len(cutoffs), times


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=8, help="8k³ atoms")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--step", type=float, default=0.05, help="Å per atom and axis")
    ap.add_argument("--disorder", type=float, default=0.5, help="Å")
    ap.add_argument("--accuracy", type=float, default=1e-5)
    args = ap.parse_args(argv)
    pos, q, cell = rocksalt(args.k, disorder=args.disorder)
    print(f"{len(q)} atoms, {args.steps} calls, steps of {args.step} Å, accuracy {args.accuracy:g}")
    print("| mode | compilations | meshes | cutoffs | median call s | total s |")
    print("|---|---|---|---|---|---|")
    # JAX's caches are cleared before each mode, so both compile from scratch
    for mode in ("fresh", "plan"):
        jax.clear_caches()
        compiled, n_mesh, n_cut, times = run(mode, pos, q, cell, args.steps, args.step, args.accuracy)
        print(f"| {mode} | {compiled} | {n_mesh} | {n_cut} | {statistics.median(times):.3f} | {sum(times):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
