"""Multi-process (multi-host) data parallelism, run for real: two processes on this machine.

Two Python processes, each with two forced CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``), are joined into one run of four
global devices by ``jaxlr.parallel.initialize_distributed()`` reading
``JAXLR_COORDINATOR=127.0.0.1:PORT``, ``JAXLR_NUM_PROCESSES=2`` and ``JAXLR_PROCESS_ID``
— the set-up the README documents for several hosts.  Their collectives cross the
process boundary through gloo over TCP (jax's default CPU collectives).  A third,
plain process with one device computes the reference.

Checked:

* each process feeds only its own rows: the rows of the other process's devices are NaN
  in what a process passes to ``to_global``, and the global array is still exact;
* three data-parallel Adam steps over the 4 devices of 2 processes give the parameters
  of one-device training (float64, relative 1e-12), identical in both processes;
* a sharded batched prediction across the processes equals the unsharded one;
* process 0 alone writes the run folder;
* (``-m slow``) one periodic system across the processes: ``coulomb_sharded`` and
  ``qeq_sharded`` equal the one-device ``jaxlr.coulomb`` and ``jaxlr.qeq``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent

#: one process of the run; argv: tests folder, output folder, "worker" | "reference" | "pme"
WORKER = textwrap.dedent('''
    import json, os, sys
    tests, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    count = 1 if mode == "reference" else 2
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count} " + os.environ.get("XLA_FLAGS", "")
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jaxlr.parallel import device_mesh, gather_global, initialize_distributed, predict_sharded, process_rows
    from jaxlr.parallel import to_global

    started = initialize_distributed()           # JAXLR_COORDINATOR, JAXLR_NUM_PROCESSES, JAXLR_PROCESS_ID
    sys.path.insert(0, tests)
    from test_train import make_dataset, tiny_potential
    from jaxlr.data import make_batches
    from jaxlr.train import fit

    pid = jax.process_index()
    report = {"started": started, "process": pid, "processes": jax.process_count(),
              "devices": jax.device_count(), "local_devices": jax.local_device_count()}
    if mode == "pme":
        # one system across the processes: the sharded PME and Qeq against one device (local)
        import jaxlr
        from jaxlr.parallel import coulomb_sharded, qeq_sharded
        from jaxlr.testing import random_ionic_system

        def rel(a, b):
            a, b = np.asarray(a), np.asarray(b)
            return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

        pos, q, cell = random_ionic_system(1000, triclinic=True, seed=7)
        res = coulomb_sharded(pos, q, cell=cell, devices=4, accuracy=1e-4)
        p = res.params
        ref = jaxlr.coulomb(pos, q, cell=cell, method="pme", smearing=p.smearing, cutoff=p.cutoff, mesh=p.mesh)
        report["pme"] = {k: rel(getattr(res, k), getattr(ref, k)) for k in ("energy", "potentials", "forces", "stress")}
        pos, _, cell = random_ionic_system(160, seed=5)
        rng = np.random.default_rng(0)
        chi, hard, sig = rng.normal(size=160), rng.uniform(5, 10, 160), rng.uniform(0.8, 1.2, 160)
        rq = qeq_sharded(pos, chi, hard, sig, cell=cell, devices=4, accuracy=1e-4, tol=1e-11)
        p = rq.params
        r1 = jaxlr.qeq(pos, chi, hard, sig, cell=cell, method="pme", solver="pcg", tol=1e-11, smearing=p.smearing,
                       cutoff=p.cutoff, mesh=p.mesh)
        report["qeq"] = {"charges": rel(rq.charges, r1.charges), "converged": bool(rq.info.converged)}
        with open(os.path.join(out, f"{mode}{pid}.json"), "w") as fh:
            json.dump(report, fh)
        sys.exit(0)
    train = make_dataset(12, seed=1, sizes=(8, 5, 6))
    kw = dict(epochs=1, batch_size=4, learning_rate=1e-2, progress=False, dtype="float64", max_shapes=1,
              plots=False)
    arrays = {}
    if mode == "worker":
        mesh = device_mesh(4)
        # ---- each process feeds its own rows only: the others are NaN here ----------------
        rows = process_rows(8, mesh)
        x = np.arange(24.0).reshape(8, 3)
        poisoned = np.full_like(x, np.nan)
        poisoned[rows] = x[rows]
        g = to_global(poisoned, mesh)
        report["rows"] = [rows.start, rows.stop]
        try:
            device_mesh(3)                       # 3 devices cannot be shared by 2 processes
        except ValueError as err:
            report["odd"] = str(err)
        report["two"] = [[d.process_index for d in device_mesh(2).devices]]   # one device of each process
        report["local_rows"] = sorted(int(s.index[0].start or 0) for s in g.addressable_shards)
        arrays["gathered"] = np.asarray(gather_global(g))
        # ---- three data-parallel steps, and a prediction spread over the processes ------
        result = fit(tiny_potential(), train, devices=4, run_dir=os.path.join(out, "run"), **kw)
        batch = make_batches(train, result.potential.species, cutoff=result.potential.cutoff, batch_size=7)[0][0]
        shard = predict_sharded(result.potential, result.variables, batch, devices=4)
        arrays["energy"], arrays["forces"] = np.asarray(shard.energy), np.asarray(shard.forces)
        if pid == 1:                             # after the last collective: the unsharded prediction
            base = result.potential.predict(result.variables, batch)
            arrays["energy_1dev"], arrays["forces_1dev"] = np.asarray(base.energy), np.asarray(base.forces)
    else:
        result = fit(tiny_potential(), train, **kw)
        from jaxlr.testing import toy_batch
        start = tiny_potential().init(jax.random.PRNGKey(0), toy_batch((1, 8), cutoff=3.0))["params"]  # fit's seed 0
        arrays.update({f"start{k}": np.asarray(v) for k, v in enumerate(jax.tree_util.tree_leaves(start))})
    leaves = jax.tree_util.tree_leaves(result.variables["params"])
    arrays.update({f"param{k}": np.asarray(v) for k, v in enumerate(leaves)})
    report["loss"] = result.history[0]["train_loss"]
    import resource
    use = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu_s"] = use.ru_utime + use.ru_stime      # for the record (the test asserts nothing on time)
    np.savez(os.path.join(out, f"{mode}{pid}.npz"), **arrays)
    with open(os.path.join(out, f"{mode}{pid}.json"), "w") as fh:
        json.dump(report, fh)
''')


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, *, mode: str = "worker", reference: bool = True, processes: int = 2,
           timeout: float = 900) -> None:
    """Run ``processes`` joined processes of ``mode`` (and the one-device reference process).

    All start together and must finish within ``timeout`` seconds; their output goes to
    files in ``out`` (no pipe can fill up and stall a process that its peers wait for).
    On a failure or a timeout the others are killed and the assertion message shows
    every process's stderr.
    """
    for _ in range(2):
        detail = _launch_once(out, mode, reference, processes, timeout, free_port())
        if detail is None:
            return
        if "address already in use" not in detail.lower():     # else another program took the port: retry
            break
    raise AssertionError(f"a process of the multi-process run failed:\n{detail}")


def _launch_once(out, mode, reference, processes, timeout, port) -> str | None:
    """One try of :func:`launch`; None when every process succeeded, else their logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXLR_")}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"      # as tests/conftest.py: faster compiles
    names = ["reference"] * reference + [f"{mode}{k}" for k in range(processes)]
    jobs, logs = {}, {}
    for name in names:
        extra = {} if name == "reference" else {"JAXLR_COORDINATOR": f"127.0.0.1:{port}",
                                                 "JAXLR_NUM_PROCESSES": str(processes),
                                                 "JAXLR_PROCESS_ID": name[len(mode):]}
        logs[name] = out / f"{name}.log"
        with open(logs[name], "w") as log:
            jobs[name] = subprocess.Popen([sys.executable, "-c", WORKER, str(TESTS), str(out), name.rstrip("0123456789")],
                                          env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.perf_counter() + timeout
    notes = {}
    while any(job.poll() is None for job in jobs.values()):
        failed = any(job.poll() not in (None, 0) for job in jobs.values())
        late = time.perf_counter() > deadline
        if failed or late:
            for name, job in jobs.items():
                if job.poll() is None:
                    job.kill()
                    job.wait()
                    notes[name] = (f"[still running after {timeout:.0f} s: killed]" if late
                                   else "[killed because another process failed]")
            break
        time.sleep(0.5)
    if notes or any(job.returncode != 0 for job in jobs.values()):
        return "\n".join(f"--- {name} (exit {jobs[name].returncode}) {notes.get(name, '')}\n"
                         f"{logs[name].read_text()[-3000:]}" for name in names)
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # In the default run: 42 s of CPU time in all (user + sys: reference 12 s, the two
    # workers 14 s and 17 s; shared 2-core VM, 2026-12-07), so about 20–30 s of wall time
    # on two free cores; 5 min at a load of 9–12.
    out = tmp_path_factory.mktemp("multiprocess")
    launch(out)
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    arrays = {p.stem: dict(np.load(p)) for p in out.glob("*.npz")}
    return {"out": out, "reports": reports, "arrays": arrays}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def test_two_processes_make_one_run_of_four_devices(run):
    for k in (0, 1):
        r = run["reports"][f"worker{k}"]
        assert r["started"] and r["process"] == k
        assert (r["processes"], r["devices"], r["local_devices"]) == (2, 4, 2)
    ref = run["reports"]["reference0"]
    assert not ref["started"] and (ref["processes"], ref["devices"]) == (1, 1)


def test_device_counts_are_shared_by_the_processes(run):
    r = run["reports"]["worker0"]
    assert "multiple of 2" in r["odd"]
    assert r["two"] == [[0, 1]]


def test_each_process_feeds_only_its_own_rows(run):
    x = np.arange(24.0).reshape(8, 3)
    for k in (0, 1):
        r = run["reports"][f"worker{k}"]
        assert r["rows"] == [4 * k, 4 * k + 4]                 # devices 2k, 2k+1 hold rows 4k … 4k+3
        assert r["local_rows"] == [4 * k, 4 * k + 2]
        # the other process's rows were NaN in this process's input: never read
        np.testing.assert_array_equal(run["arrays"][f"worker{k}"]["gathered"], x)


def test_three_steps_over_two_processes_equal_one_device(run):
    ref = run["arrays"]["reference0"]
    names = sorted(k for k in ref if k.startswith("param"))
    assert len(names) > 1
    moved = 0.0
    for k in (0, 1):
        got = run["arrays"][f"worker{k}"]
        for name in names:
            # float64, relative; the gradient sums run in another order (per-device partial sums)
            assert rel(got[name], ref[name]) < 1e-12, (k, name, rel(got[name], ref[name]))
            np.testing.assert_array_equal(got[name], run["arrays"]["worker0"][name])   # replicated: identical
    for name in names:           # the three steps (learning rate 1e-2) did move the parameters
        moved = max(moved, float(np.max(np.abs(ref[name] - ref[name.replace("param", "start")]))))
    assert moved > 1e-4
    for k in (0, 1):
        loss, ref_loss = run["reports"][f"worker{k}"]["loss"], run["reports"]["reference0"]["loss"]
        assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)


def test_sharded_prediction_across_processes_equals_unsharded(run):
    base = run["arrays"]["worker1"]
    assert base["energy_1dev"].shape == (7,)         # 7 structures, padded to 8 for 4 devices, cut back
    for k in (0, 1):
        got = run["arrays"][f"worker{k}"]
        assert got["energy"].shape == (7,)
        assert rel(got["energy"], base["energy_1dev"]) < 1e-12
        assert rel(got["forces"], base["forces_1dev"]) < 1e-12


def test_process_zero_alone_writes_the_run_folder(run):
    folder = run["out"] / "run"
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == 1 and (folder / "checkpoint").is_dir()
    assert not list(folder.rglob("*.tmp"))


@pytest.mark.slow
def test_sharded_pme_and_qeq_across_processes(tmp_path):
    """coulomb_sharded and qeq_sharded over 2 processes × 2 devices equal one device.

    1,000 atoms, triclinic, accuracy 1e-4; Qeq of 160 atoms.  34 s of CPU time in all
    (shared 2-core VM, 2026-12-07); 5.5 min of wall time at a load of 10.
    """
    launch(tmp_path, mode="pme", reference=False)
    for k in (0, 1):
        r = json.loads((tmp_path / f"pme{k}.json").read_text())
        assert (r["processes"], r["devices"]) == (2, 4)
        for key, value in r["pme"].items():
            assert value < 1e-10, (k, key, r["pme"])         # float64, another summation order
        assert r["qeq"]["converged"] and r["qeq"]["charges"] < 1e-8, r["qeq"]   # both PCG stop at 1e-11


def test_bad_distributed_settings_are_refused(monkeypatch):
    """Checked before jax.distributed starts: nothing is initialised in this process."""
    from jaxlr.parallel import initialize_distributed

    for name in ("JAXLR_COORDINATOR", "JAXLR_NUM_PROCESSES", "JAXLR_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert initialize_distributed() is False
    with pytest.raises(ValueError, match="JAXLR_NUM_PROCESSES and JAXLR_PROCESS_ID"):
        initialize_distributed("127.0.0.1:1234")
    with pytest.raises(ValueError, match="not host:port"):
        initialize_distributed("node0", 2, 0)
    with pytest.raises(ValueError, match="must lie in 0"):
        initialize_distributed("127.0.0.1:1234", 2, 2)
    monkeypatch.setenv("JAXLR_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="must be integers"):
        initialize_distributed("127.0.0.1:1234", process_id=0)
