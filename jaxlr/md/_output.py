"""What :func:`jaxlr.md.run_md` writes: thermo.csv, trajectory.extxyz, restart.npz, plots, progress.

All host side (numpy, ASE, matplotlib on an Agg canvas imported lazily); nothing here is
jitted.  Units: Å, eV, ps, K, bar, g/cm³; velocities in ASE's units (Å per
Å·√(amu/eV)), as ``ase.Atoms.get_velocities`` returns them.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["MDProgress", "RESTART_FORMAT", "ThermoWriter", "read_restart", "read_thermo", "thermo_columns",
           "write_frame", "write_plots", "write_restart"]

RESTART_FORMAT = "jaxlr-md-restart"
_RESTART_VERSION = 1

#: thermo.csv columns of every run (then ``pcg_iterations``, ``total_charge_e`` for Qeq)
BASE_COLUMNS = ("step", "time_ps", "temperature_K", "potential_eV", "kinetic_eV", "total_eV", "conserved_eV",
                "pressure_bar", "volume_A3", "density_g_cm3")
QEQ_COLUMNS = ("pcg_iterations", "total_charge_e")


def thermo_columns(qeq: bool) -> tuple:
    """The column names of thermo.csv (Qeq runs add the PCG iterations and the total charge).

    Example:
      >>> thermo_columns(True)[-3:]
      ('density_g_cm3', 'pcg_iterations', 'total_charge_e')
    """
    return BASE_COLUMNS + (QEQ_COLUMNS if qeq else ())


class ThermoWriter:
    """Appends rows to thermo.csv (flushed after every row, so a crash keeps what was done).

    ``append=True`` continues an existing file whose header matches (a restart); otherwise
    the file is (re)written with the header.  Integers for ``step`` and ``pcg_iterations``,
    full-precision floats (``repr``) elsewhere, ``nan`` for non-finite values.

    Example:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "thermo.csv"
      >>> w = ThermoWriter(path, ("step", "temperature_K"), append=False)
      >>> w.write({"step": 10, "temperature_K": 300.5}); w.close()
      >>> path.read_text()
      'step,temperature_K\\n10,300.5\\n'
    """

    def __init__(self, path: Path, columns: tuple, append: bool):
        self.path = Path(path)
        self.columns = tuple(columns)
        if append and self.path.is_file():
            with open(self.path, encoding="utf-8") as fh:
                header = fh.readline().strip().split(",")
            if tuple(header) != self.columns:
                raise ValueError(f"{self.path} has columns {header}, this run writes {list(self.columns)}; "
                                 "restart into a new output folder.")
            self._fh = open(self.path, "a", encoding="utf-8")
        else:
            self._fh = open(self.path, "w", encoding="utf-8")
            self._fh.write(",".join(self.columns) + "\n")
            self._fh.flush()

    def write(self, row: dict) -> None:
        fields = []
        for c in self.columns:
            v = row[c]
            if c in ("step", "pcg_iterations"):
                fields.append(str(int(v)))
            else:
                fields.append(repr(float(v)) if np.isfinite(v) else "nan")
        self._fh.write(",".join(fields) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_thermo(path) -> dict:
    """thermo.csv as ``{column: (rows,) float array}``.

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "thermo.csv"
      >>> _ = p.write_text("step,temperature_K\\n0,300.0\\n10,nan\\n")
      >>> read_thermo(p)["temperature_K"].tolist()
      [300.0, nan]
    """
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
        rows = [line.strip().split(",") for line in fh if line.strip()]
    data = np.array([[float(x) for x in r] for r in rows], dtype=np.float64).reshape(len(rows), len(header))
    return {c: data[:, k] for k, c in enumerate(header)}


def write_frame(path: Path, numbers, positions, cell, momenta, *, energy, forces=None, charges=None,
                info=None) -> None:
    """Append one frame to an extended-XYZ file (ASE): positions Å, momenta, charges, cell.

    Args:
      path: the .extxyz file (appended to when it exists).  numbers: (N,) atomic numbers.
      positions: (N, 3) Å.  cell: (3, 3) rows are lattice vectors (Å), periodic.
      momenta: (N, 3) amu·Å per ASE time unit (``atoms.get_velocities()`` gives
        momenta / masses).  energy: potential energy (eV).  forces: (N, 3) eV/Å or None.
      charges: (N,) e or None.  info: extra per-frame values (step, time_ps, …).

    Example:
      >>> import tempfile, pathlib, numpy as np, ase.io
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.extxyz"
      >>> write_frame(path, [11, 17], [[0, 0, 0], [2.8, 0, 0]], np.eye(3) * 5.6, np.ones((2, 3)), energy=-1.0,
      ...             charges=[1.0, -1.0], info={"step": 5})
      >>> a = ase.io.read(path)
      >>> int(a.info["step"]), a.get_charges().tolist(), float(a.get_potential_energy())
      (5, [1.0, -1.0], -1.0)
    """
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = ase.Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    atoms.set_momenta(momenta)
    results = {"energy": float(energy)}
    if forces is not None:
        results["forces"] = np.asarray(forces, dtype=np.float64)
    if charges is not None:
        results["charges"] = np.asarray(charges, dtype=np.float64)
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(info or {})
    ase.io.write(str(path), atoms, format="extxyz", append=Path(path).is_file())


def write_restart(path: Path, *, meta: dict, arrays: dict, state_leaves: dict) -> None:
    """Write the restart file (npz, atomically): metadata as JSON, arrays, and the integrator's state leaves.

    Example:
      >>> import tempfile, pathlib, numpy as np
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "restart.npz"
      >>> write_restart(path, meta={"step": 3}, arrays={"numbers": np.array([11, 17])},
      ...               state_leaves={"['md'].position": np.zeros((2, 3))})
      >>> meta, arrays, leaves = read_restart(path)
      >>> meta["step"], arrays["numbers"].tolist(), list(leaves)
      (3, [11, 17], ["['md'].position"])
    """
    payload = {"format": np.array(RESTART_FORMAT), "version": np.array(_RESTART_VERSION),
               "meta": np.array(json.dumps(meta))}
    payload.update({k: np.asarray(v) for k, v in arrays.items()})
    payload.update({"state:" + k: np.asarray(v) for k, v in state_leaves.items()})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **payload)
    os.replace(tmp, path)


def read_restart(path) -> tuple[dict, dict, dict]:
    """``(meta, arrays, state_leaves)`` of a restart file (ValueError when it is not one).

    Example:
      >>> import tempfile, pathlib
      >>> bad = pathlib.Path(tempfile.mkdtemp()) / "thermo.csv"
      >>> _ = bad.write_text("step\\n0\\n")
      >>> try:
      ...     read_restart(bad)
      ... except ValueError as err:
      ...     print("not a jaxlr md restart file" in str(err))
      True
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"restart file {str(path)!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a jaxlr md restart file (npz): {err}") from None
    if str(data.get("format", "")) != RESTART_FORMAT:
        raise ValueError(f"{str(path)!r} is not a jaxlr md restart file (written by jaxlr md / run_md).")
    if int(data["version"]) > _RESTART_VERSION:
        raise ValueError(f"restart file version {int(data['version'])} is newer than this jaxlr understands.")
    meta = json.loads(str(data["meta"]))
    leaves = {k[len("state:"):]: v for k, v in data.items() if k.startswith("state:")}
    arrays = {k: v for k, v in data.items() if not k.startswith("state:") and k not in ("format", "version", "meta")}
    return meta, arrays, leaves


class MDProgress:
    """One progress line on a stream (stderr by default): steps, steps/s, temperature, energy.

    On a terminal the line is redrawn in place (``\\r``) at most five times a second;
    otherwise a line is printed about every tenth of the run (and at the end).

    Example:
      >>> import io
      >>> s = io.StringIO()
      >>> bar = MDProgress(True, total=100, stream=s)
      >>> bar.update(50, 812.3, 1199.6, -1234.5)
      >>> s.getvalue()
      'md 50/100 [##########..........] step 50 812.3 steps/s T 1200 K E -1234.5 eV\\n'
    """

    def __init__(self, enabled: bool, total: int, start: int = 0, stream=None):
        self.enabled = bool(enabled)
        self.stream = stream or sys.stderr
        self.live = self.enabled and getattr(self.stream, "isatty", lambda: False)()
        self.total = int(total)
        self.start = int(start)
        self.last = 0.0
        self.next_log = 0
        self.width = 0

    def _write(self, text: str, end: str = "") -> None:
        pad = max(self.width - len(text), 0) if self.live else 0
        self.stream.write(("\r" if self.live else "") + text + " " * pad + end)
        self.width = 0 if end else len(text)
        self.stream.flush()

    def update(self, step: int, rate: float, temperature: float, energy: float, final: bool = False) -> None:
        if not self.enabled:
            return
        done = step - self.start
        filled = int(20 * done / max(self.total, 1))
        text = (f"md {done}/{self.total} [{'#' * filled}{'.' * (20 - filled)}] step {step} "
                f"{rate:.1f} steps/s T {temperature:.0f} K E {energy:.6g} eV")
        if self.live:
            now = time.perf_counter()
            if final or now - self.last >= 0.2:
                self.last = now
                self._write(text, end="\n" if final else "")
        elif final or done >= self.next_log:
            self.next_log = done + max(1, self.total // 10)
            self._write(text, end="\n")

    def message(self, text: str) -> None:
        if self.enabled:
            if self.live and self.width:
                self.stream.write("\n")
                self.width = 0
            self.stream.write(text + "\n")
            self.stream.flush()


def _figure(size=(6.0, 4.0)):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed: MD plots are skipped (pip install matplotlib).", stacklevel=3)
        return None
    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def write_plots(thermo: dict, out: Path, n_atoms: int, *, target_temperature=None, target_pressure=None) -> list:
    """energy.png, temperature.png and pressure_volume.png from thermo columns; returns the paths written.

    energy.png: potential and total energy per atom (top) and the drift of the total and of
    the conserved quantity in meV/atom (bottom); temperature.png: temperature (K) with the
    target; pressure_volume.png: pressure (bar) and volume (Å³) against time (ps).
    matplotlib draws on its own Agg canvas (no global state); without matplotlib nothing
    is written (a warning).

    Example:
      >>> import tempfile, pathlib, numpy as np
      >>> cols = ("time_ps", "potential_eV", "total_eV", "conserved_eV", "temperature_K", "pressure_bar",
      ...         "volume_A3")
      >>> thermo = {c: np.linspace(1.0, 2.0, 5) for c in cols}
      >>> [p.name for p in write_plots(thermo, pathlib.Path(tempfile.mkdtemp()), 8)]
      ['energy.png', 'temperature.png', 'pressure_volume.png']
    """
    out = Path(out)
    t = thermo["time_ps"]
    written = []
    fig = _figure()
    if fig is None:
        return written
    fig.set_size_inches(6.0, 6.0)
    top = fig.add_subplot(2, 1, 1)
    for key, label in (("potential_eV", "potential"), ("total_eV", "potential + kinetic")):
        top.plot(t, thermo[key] / n_atoms, label=label)
    top.set_ylabel("energy per atom (eV)")
    top.grid(True, alpha=0.3)
    top.legend()
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    for key, label in (("total_eV", "total"), ("conserved_eV", "conserved (thermostat/barostat incl.)")):
        y = thermo[key]
        if len(y) and np.isfinite(y[0]) and not (key == "conserved_eV"
                                                 and np.allclose(y, thermo["total_eV"], equal_nan=True)):
            bottom.plot(t, 1e3 * (y - y[0]) / n_atoms, label=label)
    bottom.set_xlabel("time (ps)")
    bottom.set_ylabel("drift per atom (meV)")
    bottom.grid(True, alpha=0.3)
    bottom.legend()
    fig.tight_layout()
    fig.savefig(out / "energy.png")
    written.append(out / "energy.png")

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(t, thermo["temperature_K"], label="instantaneous")
    if target_temperature is not None:
        ax.axhline(target_temperature, color="0.4", ls="--", lw=1, label=f"target {target_temperature:g} K")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("temperature (K)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "temperature.png")
    written.append(out / "temperature.png")

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(t, thermo["pressure_bar"], color="C0")
    if target_pressure is not None:
        ax.axhline(target_pressure, color="C0", ls="--", lw=1)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("pressure (bar)", color="C0")
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(t, thermo["volume_A3"], color="C1")
    ax2.set_ylabel("volume (Å³)", color="C1")
    fig.tight_layout()
    fig.savefig(out / "pressure_volume.png")
    written.append(out / "pressure_volume.png")
    return written
