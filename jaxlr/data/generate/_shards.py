"""The staged, resumable machinery shared by the data generators (no jaxlr internals).

Every generator (:mod:`~jaxlr.data.generate.water_clusters`,
:mod:`~jaxlr.data.generate.water_periodic`, :mod:`~jaxlr.data.generate.water_response`)
runs three stages over small shard files under an output folder ``OUT``:

1. **sample** — one extended-XYZ shard per trajectory, ``OUT/samples/SET/traj_00012.extxyz``
   (:func:`sample_path`, :func:`sample_stage`, :func:`load_samples`; inside a trajectory
   :func:`snapshot_steps` and :func:`random_rotation`);
2. **label** — one ``ID.npz`` per structure in a label folder (``OUT/labels/SET`` by
   default, :func:`label_dir`), or an ``ID.dropped.json`` marker plus a line in
   ``dropped.jsonl`` for a structure whose calculation failed (:func:`store_labels`,
   :func:`label_and_store`, :func:`timed`, :func:`label_stage`);
3. **assemble** — the labelled frames in plan order, written as one (gzipped) extended-XYZ
   file (:func:`labelled`, :func:`write_extxyz`, :func:`write_assembled`).

Each shard is written to a temporary name and renamed when complete
(:func:`atomic_write_bytes`), so a killed run resumes where it stopped when the same command
is rerun: existing shards are skipped.  Progress goes to stderr as timestamped lines
(:func:`log`, :class:`Progress`); :func:`stage_parser` and :func:`run_stages` make the common
command line ``{sample,label,assemble,all} --out --set --seed --dest --partial``;
:func:`map_tasks` spreads a stage over worker processes and :func:`installed_versions` feeds
the provenance.

Only numpy is imported at module level (ASE inside the functions that need it), so the
generators also run as plain files in an environment without jax.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("sample", "label", "assemble", "all")


# ======================================================================================
# files and messages
# ======================================================================================
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A reader (or a resumed run) sees either no file or the complete one.  Missing parent
    folders are made; the file gets the permissions of an ordinary new file (0o666 minus
    the umask); the temporary file is removed when writing fails.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     atomic_write_bytes(Path(tmp) / "a" / "b.txt", b"done")
      ...     (Path(tmp) / "a" / "b.txt").read_bytes(), sorted(p.name for p in (Path(tmp) / "a").iterdir())
      (b'done', ['b.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def log(msg: str) -> None:
    """Print ``[HH:MM:SS] msg`` to stderr (flushed: a log file follows a long run).

    Example:
      >>> log("label smoke: 3 structures")     # stderr: [11:28:33] label smoke: 3 structures
    """
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Progress:
    """Progress lines on stderr: ``desc k/N (p %), s per item, time left [note]`` (no tqdm).

    A line is printed when ``every`` seconds have passed since the last one, at the end,
    and whenever :meth:`update` gets a note.  The rate is that of the last ``window``
    items, so the estimate follows a machine whose load changes.

    Args:
      desc: what is counted, e.g. ``"label smoke"``.
      total: items in all; done: items already done before this run (resumed shards).
      every: seconds between lines without a note.
      window: items the rate is measured over.
      costs: relative cost of each item still to do, in the order they will be done
        (``total − done`` numbers, e.g. atoms² for a DFT label), or None for equal
        costs; the time left is then the measured seconds per unit cost times the cost
        still to do.

    Raises:
      ValueError: ``done`` outside [0, total], or ``costs`` not of length ``total − done``.

    Example:
      >>> bar = Progress("label smoke", total=3, done=1, costs=[1.0, 4.0])
      >>> bar.update(note="dimer 0.1 s")      # stderr: [..] label smoke 2/3 (67 %), 0.0 s each, ...
      >>> bar.done
      2
    """

    def __init__(self, desc: str, total: int, done: int = 0, *, every: float = 20.0, window: int = 10,
                 costs=None):
        if not 0 <= done <= total:
            raise ValueError(f"done must lie in [0, total = {total}], got {done}.")
        if costs is not None and len(costs) != total - done:
            raise ValueError(f"costs must hold one number per item still to do ({total - done}), "
                             f"got {len(costs)}.")
        self.desc, self.total, self.done, self.start = desc, total, done, done
        self.every, self.window = every, window
        self.costs = None if costs is None else np.cumsum(np.asarray(costs, dtype=float))
        self.last = time.perf_counter()
        self.stamps = [(done, 0.0, self.last)]          # (items done, cost done in this run, time)

    def _cost(self, k: int) -> float:
        """Cost of the first ``k`` items of this run."""
        if self.costs is None or k <= 0:
            return float(max(k, 0))
        return float(self.costs[min(k, len(self.costs)) - 1])

    def update(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more items done; print a line if due (always with a ``note``)."""
        self.done += n
        now = time.perf_counter()
        self.stamps = (self.stamps + [(self.done, self._cost(self.done - self.start), now)])[-(self.window + 1):]
        if now - self.last >= self.every or self.done == self.total or note:
            self.last = now
            (k0, c0, t0), (k1, c1, t1) = self.stamps[0], self.stamps[-1]
            rate = (t1 - t0) / max(k1 - k0, 1)
            remaining = self._cost(self.total - self.start) - c1
            left = (t1 - t0) / (c1 - c0) * remaining if c1 > c0 else 0.0
            pct = 100.0 * self.done / max(self.total, 1)
            log(f"{self.desc} {self.done}/{self.total} ({pct:.0f} %), {rate:.1f} s each, "
                f"{left / 60:.1f} min left{' ' + note if note else ''}")


@contextlib.contextmanager
def timed(timings: dict, key: str):
    """Context manager that adds the wall time (s) of its block to ``timings[key]``.

    Example:
      >>> timings = {}
      >>> with timed(timings, "scf"):
      ...     pass
      >>> sorted(timings), timings["scf"] >= 0.0
      (['scf'], True)
    """
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def map_tasks(fn, tasks, workers: int = 1):
    """``fn(task)`` for every task, in order, lazily; in ``workers`` spawned processes if > 1.

    ``fn`` and the tasks must be picklable for ``workers > 1`` (a module-level function or
    a ``functools.partial`` of one).

    Example:
      >>> list(map_tasks(abs, [-1, 2, -3]))
      [1, 2, 3]
    """
    if workers <= 1:
        for t in tasks:
            yield fn(t)
    else:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap(fn, tasks)


def installed_versions(names) -> dict:
    """``{name.lower(): version}`` of installed distributions (``"absent"`` when not installed).

    Example:
      >>> v = installed_versions(("numpy", "no-such-package-xyz"))
      >>> sorted(v), v["no-such-package-xyz"]
      (['no-such-package-xyz', 'numpy'], 'absent')
    """
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in names:
        try:
            out[name.lower()] = version(name)
        except PackageNotFoundError:
            out[name.lower()] = "absent"
    return out


def write_extxyz(path: Path, frames) -> None:
    """Write ASE frames as extended XYZ, atomically; gzipped (level 9, zero timestamp, so the
    same frames give the same bytes) when the name ends in ``.gz``.

    Example:
      >>> import tempfile, ase, ase.io
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     write_extxyz(Path(tmp) / "w.extxyz.gz", [ase.Atoms("OH2", positions=np.eye(3))])
      ...     ase.io.read(Path(tmp) / "w.extxyz.gz", ":")[0].get_chemical_formula()
      'H2O'
    """
    import ase.io
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    data = buf.getvalue().encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    atomic_write_bytes(Path(path), data)


# ======================================================================================
# stage 1: samples
# ======================================================================================
def random_rotation(rng) -> np.ndarray:
    """A uniformly random 3×3 rotation matrix (from a random unit quaternion drawn from ``rng``).

    Example:
      >>> r = random_rotation(np.random.default_rng(0))
      >>> bool(np.allclose(r @ r.T, np.eye(3))), round(float(np.linalg.det(r)), 12)
      (True, 1.0)
    """
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])


def snapshot_steps(traj, advance):
    """Run a trajectory's dynamics to each of its snapshots: yields ``(snapshot, step)``.

    ``advance(n)`` runs ``n`` MD steps: first ``traj.equilibration_steps``, then
    ``traj.interval_steps`` before every snapshot after the first; ``step`` counts the steps
    run so far (the snapshot's time is ``step`` × the time step).

    Example:
      >>> from types import SimpleNamespace
      >>> traj = SimpleNamespace(equilibration_steps=20, interval_steps=10, n_snapshots=3)
      >>> ran = []
      >>> list(snapshot_steps(traj, ran.append)), ran
      ([(0, 20), (1, 30), (2, 40)], [20, 10, 10])
    """
    advance(traj.equilibration_steps)
    step = traj.equilibration_steps
    for snap in range(traj.n_snapshots):
        if snap > 0:
            advance(traj.interval_steps)
            step += traj.interval_steps
        yield snap, step


def sample_path(out: Path, set_name: str, index: int) -> Path:
    """The shard of trajectory ``index`` of a set: ``OUT/samples/SET/traj_00012.extxyz``.

    Example:
      >>> sample_path(Path("runs"), "smoke", 12).as_posix()
      'runs/samples/smoke/traj_00012.extxyz'
    """
    return Path(out) / "samples" / set_name / f"traj_{index:05d}.extxyz"


def _sample_shard(args) -> int:
    path, sample, traj = args
    write_extxyz(path, sample(traj))
    return traj.n_snapshots


def sample_stage(out: Path, set_name: str, trajs, sample, *, workers: int = 1, detail: str = "") -> None:
    """Stage 1: write the shard of every trajectory that has none yet.

    Args:
      out: the output folder; set_name: the set (names the shard folder).
      trajs: the plan, objects with ``index``, ``n_snapshots`` and ``temperature`` (K).
      sample: ``sample(traj)`` → list of ``ase.Atoms`` (picklable for ``workers > 1``).
      workers: processes (each should be single-threaded).
      detail: appended to the first log line (settings worth a glance).

    Example:
      >>> # sample_stage(Path("runs/water"), "smoke", plan("smoke"), partial(sample_trajectory, "smoke", seed=0))
    """
    todo = [t for t in trajs if not sample_path(out, set_name, t.index).exists()]
    total = sum(t.n_snapshots for t in trajs)
    done = total - sum(t.n_snapshots for t in todo)
    log(f"sample {set_name}: {len(trajs)} trajectories, {total} structures, {done} already sampled{detail}")
    bar = Progress(f"sample {set_name}", total, done, every=0.0)
    tasks = [(sample_path(out, set_name, t.index), sample, t) for t in todo]
    for t, n in zip(todo, map_tasks(_sample_shard, tasks, workers)):
        bar.update(n, note=f"(trajectory {t.index}, {t.temperature:.0f} K)")


def load_samples(out: Path, set_name: str, trajs) -> list:
    """All sampled frames (``ase.Atoms``) of the trajectories ``trajs``, in their order.

    Raises:
      FileNotFoundError: a trajectory's shard is missing (run the sample stage).

    Example:
      >>> load_samples(Path("nowhere"), "smoke", [])
      []
    """
    import ase.io
    frames = []
    for traj in trajs:
        path = sample_path(out, set_name, traj.index)
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run the 'sample' stage first")
        frames.extend(ase.io.read(path, ":", format="extxyz"))
    return frames


# ======================================================================================
# stage 2: labels
# ======================================================================================
def label_dir(out: Path, set_name: str) -> Path:
    """The default folder of a set's label shards, ``OUT/labels/SET``.

    Example:
      >>> label_dir(Path("runs"), "smoke").as_posix()
      'runs/labels/smoke'
    """
    return Path(out) / "labels" / set_name


def is_done(label_dir: Path, structure_id: str) -> bool:
    """Whether a structure is labelled (``ID.npz``) or dropped (``ID.dropped.json``).

    Example:
      >>> is_done(Path("nowhere"), "smoke-n01-t0000-s00")
      False
    """
    d = Path(label_dir)
    return (d / f"{structure_id}.npz").exists() or (d / f"{structure_id}.dropped.json").exists()


def store_labels(label_dir: Path, structure_id: str, labels: dict | None, reason: str = "", **record) -> None:
    """Write a structure's labels as ``ID.npz`` — or, for ``labels=None``, drop it.

    A dropped structure gets an ``ID.dropped.json`` marker (so it is not retried) and a line
    ``{"structure_id", "reason", **record}`` appended to ``dropped.jsonl``.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     store_labels(Path(tmp), "a", {"energy": -1.5, "forces": np.zeros((3, 3))})
      ...     store_labels(Path(tmp), "b", None, "SCF not converged", n_atoms=3)
      ...     float(np.load(Path(tmp) / "a.npz")["energy"]), is_done(Path(tmp), "b")
      ...     (Path(tmp) / "dropped.jsonl").read_text().strip()
      (-1.5, True)
      '{"structure_id": "b", "reason": "SCF not converged", "n_atoms": 3}'
    """
    d = Path(label_dir)
    if labels is None:
        line = json.dumps({"structure_id": structure_id, "reason": reason, **record})
        atomic_write_bytes(d / f"{structure_id}.dropped.json", line.encode())
        with open(d / "dropped.jsonl", "a") as fh:
            fh.write(line + "\n")
        return
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in labels.items()})
    atomic_write_bytes(d / f"{structure_id}.npz", buf.getvalue())


def label_and_store(label_dir: Path, structure_id: str, compute, reason: str, **record):
    """Run ``compute()`` (the labels of one structure, or None on failure) and store the result.

    The stored ``ID.npz`` holds the labels, the entries of an optional ``"timings"`` dict
    of the labels as ``time_KEY`` and the wall time as ``seconds``; None drops the structure
    with ``reason`` and ``record`` (:func:`store_labels`).

    Returns:
      ``(labels without "timings", timings, wall seconds)``, labels None when dropped.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     labels, timings, wall = label_and_store(Path(tmp), "a", lambda: {"energy": 1.0, "timings": {"scf": 0.5}},
      ...                                             "failed")
      ...     sorted(np.load(Path(tmp) / "a.npz").files), labels, timings
      (['energy', 'seconds', 'time_scf'], {'energy': 1.0}, {'scf': 0.5})
    """
    t0 = time.perf_counter()
    labels = compute()
    wall = time.perf_counter() - t0
    if labels is None:
        store_labels(label_dir, structure_id, None, reason, **record)
        return None, {}, wall
    timings = labels.pop("timings", {})
    store_labels(label_dir, structure_id, {**labels, **{f"time_{k}": v for k, v in timings.items()}, "seconds": wall})
    return labels, timings, wall


def label_stage(frames, label_dir: Path, set_name: str, task, *, order_seed, workers: int = 1,
                noun: str = "structures", detail: str = "", cost=None) -> None:
    """Stage 2: run ``task(frame)`` on every frame not yet labelled or dropped.

    The frames are visited in a seeded shuffled order, so that a partial run covers the
    whole plan; every finished task prints a progress line with the note it returns.

    Args:
      frames: the sampled frames (``info["structure_id"]`` names their shards).
      label_dir: the folder of the ``ID.npz`` / ``ID.dropped.json`` shards (made if needed).
      set_name: for the messages.
      task: ``task(frame)`` → a note string; it stores the labels itself
        (:func:`store_labels`); picklable for ``workers > 1``.
      order_seed: entropy of the shuffle, ``numpy.random.SeedSequence(order_seed)``.
      workers: processes (each should be single-threaded).
      noun, detail: the first log line reads ``label SET: N {noun}, k already labelled or
        dropped{detail}``.
      cost: ``cost(frame)`` → relative cost for the time-left estimate (default equal).

    Example:
      >>> # label_stage(load_samples(out, "smoke", plan("smoke")), out / "labels" / "smoke", "smoke",
      >>> #             partial(_label_one, out / "labels" / "smoke"), order_seed=[0, 3, 999])
    """
    d = Path(label_dir)
    d.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(np.random.SeedSequence(order_seed)).permutation(len(frames))
    todo = [frames[i] for i in order if not is_done(d, frames[i].info["structure_id"])]
    done = len(frames) - len(todo)
    log(f"label {set_name}: {len(frames)} {noun}, {done} already labelled or dropped{detail}")
    bar = Progress(f"label {set_name}", len(frames), done, costs=None if cost is None else [cost(f) for f in todo])
    for note in map_tasks(task, todo, workers):
        bar.update(1, note=note)


# ======================================================================================
# stage 3: assemble
# ======================================================================================
def labelled(frames, label_dir: Path, set_name: str, *, partial: bool = False, noun: str = "structures") -> list:
    """``[(frame, labels)]`` for the labelled frames, in order; dropped frames are left out.

    ``labels`` is the dict of arrays of the frame's ``ID.npz``.

    Raises:
      RuntimeError: some frames are neither labelled nor dropped, unless ``partial`` (then
        they are left out, and a line says how many).

    Example:
      >>> labelled([], Path("nowhere"), "smoke")
      []
    """
    d = Path(label_dir)
    result, missing = [], []
    for f in frames:
        sid = f.info["structure_id"]
        path = d / f"{sid}.npz"
        if not path.exists():
            if not (d / f"{sid}.dropped.json").exists():
                missing.append(sid)
            continue
        with np.load(path) as z:
            result.append((f, {k: z[k] for k in z.files}))
    if missing and not partial:
        raise RuntimeError(f"{len(missing)} {noun} of {set_name} are not labelled yet (e.g. {missing[0]}); "
                           "run the 'label' stage first (or assemble with --partial)")
    if missing:
        log(f"assemble {set_name}: {len(missing)} {noun} not labelled yet are left out (--partial)")
    return result


def write_assembled(out: Path, set_name: str, frames, dest: Path | None = None) -> Path:
    """Stage 3's output: ``frames`` to ``dest`` (default ``OUT/SET.extxyz.gz``); returns the path.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     write_assembled(Path(tmp), "smoke", []).name
      'smoke.extxyz.gz'
    """
    dest = Path(dest) if dest is not None else Path(out) / f"{set_name}.extxyz.gz"
    write_extxyz(dest, frames)
    log(f"assemble {set_name}: {len(frames)} frames -> {dest}")
    return dest


# ======================================================================================
# command line
# ======================================================================================
def stage_parser(module: str, description: str, *, out: str, sets, default_set: str) -> argparse.ArgumentParser:
    """The common command line: ``{sample,label,assemble,all} --out --set --seed --dest --partial``.

    Args:
      module: the generator's module (``prog`` is ``python -m MODULE``).
      description: the ``--help`` text; out: the default ``--out`` folder.
      sets: the choices of ``--set``; default_set: its default.

    Example:
      >>> p = stage_parser("gen", "a generator", out="runs/x", sets=("main", "smoke"), default_set="main")
      >>> a = p.parse_args(["all", "--set", "smoke"])
      >>> a.stage, a.set_name, a.seed, a.out.as_posix(), a.dest, a.partial
      ('all', 'smoke', 0, 'runs/x', None, False)
    """
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--out", type=Path, default=Path(out), help="directory of the resumable shards")
    p.add_argument("--set", dest="set_name", choices=tuple(sets), default=default_set)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dest", type=Path, default=None, help="assembled file (default OUT/SET.extxyz.gz)")
    p.add_argument("--partial", action="store_true", help="assemble: leave out structures not labelled yet")
    return p


def run_stages(args, sample, label, assemble) -> int:
    """Run the stages that ``args.stage`` names (all three, in order, for ``"all"``).

    ``sample``, ``label``, ``assemble``: callables without arguments.  Returns 0, the exit
    status, after a line with the time taken.

    Example:
      >>> a = stage_parser("gen", "", out="runs", sets=("smoke",), default_set="smoke").parse_args(["label"])
      >>> run_stages(a, lambda: print("sample"), lambda: print("label"), lambda: print("assemble"))
      label
      0
    """
    t0 = time.perf_counter()
    for stage, run in (("sample", sample), ("label", label), ("assemble", assemble)):
        if args.stage in (stage, "all"):
            run()
    log(f"{args.stage} {args.set_name}: done in {time.perf_counter() - t0:.1f} s")
    return 0
