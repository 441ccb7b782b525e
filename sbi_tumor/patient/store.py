"""The run store: every finished simulation of an inference run on disk, so a run resumes.

[`SimulationStore`][sbi_tumor.patient.store.SimulationStore] keeps the parameters and label maps of every
finished simulation in a zarr (v3) directory; an interrupted inference run resumes where it
stopped, and the resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..config import InferenceConfig

from ..inference import ObservedManyTimes, parameter_pairs, round_label, simulate_round
from ..io import package_version
from ..one_scan import OneScanSimulator
from ..simulator import TumorSimulator

__all__ = ["SimulationStore", "StoreError"]


class StoreError(ValueError):
    """Raised when a simulation store cannot be created, opened or written as asked."""


class SimulationStore:
    """Parameters and label maps of finished simulations, per inference round, in zarr v3.

    Layout: a group per round ``round_<r>`` holding ``theta`` (float32, (N, theta_dim)),
    ``x`` (uint8, (N, nx, ny, nz), one chunk per simulation, compressed) and ``done`` (bool,
    (N,)). A row counts only once ``done`` is set, which is written after its ``theta`` and
    ``x`` (zarr writes each chunk atomically), so an interruption loses at most the batch being
    written. Root attributes: ``config`` (JSON), ``package_version``, ``format_version``,
    ``grid_shape``, ``theta_dim``. Meant for one writer at a time.

    Create with [`create`][sbi_tumor.patient.store.SimulationStore.create], reopen (to resume or read) with [`open`][sbi_tumor.patient.store.SimulationStore.open].
    """

    FORMAT = "sbi-tumor.simulations"
    FORMAT_VERSION = 1
    # Rows of theta/done per chunk: small arrays, so large chunks keep the file count low.
    _ROWS_PER_CHUNK = 4096

    def __init__(self, group: Any, path: Path) -> None:
        self._group = group
        self.path = path

    @classmethod
    def create(cls, path: str | Path, grid_shape: Sequence[int], theta_dim: int = 4,
               config: dict[str, Any] | None = None, overwrite: bool = False) -> "SimulationStore":
        """New empty store for label maps of shape ``grid_shape`` and ``theta_dim`` parameters."""
        import zarr

        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(
                f"Simulation store {path} already exists; reopen it with SimulationStore.open to "
                "resume, or pass overwrite=True to start afresh."
            )
        grid_shape = [int(n) for n in grid_shape]
        if len(grid_shape) != 3 or min(grid_shape) < 1:
            raise StoreError(f"grid_shape must be three positive sizes, got {grid_shape}.")
        config = dict(config or {})
        try:
            json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise StoreError(f"config must be JSON-serialisable (plain numbers, strings, lists, "
                             f"dicts): {err}") from err
        attributes = {"format": cls.FORMAT, "format_version": cls.FORMAT_VERSION,
                      "package_version": package_version(), "config": config,
                      "grid_shape": grid_shape, "theta_dim": int(theta_dim)}
        group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=attributes)
        return cls(group, path)

    @classmethod
    def open(cls, path: str | Path, mode: Literal["r", "r+"] = "r+") -> "SimulationStore":
        """Existing store; ``mode="r"`` for read only. Raises for an incompatible format."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"No simulation store at {path} (no zarr.json); create one with "
                             "SimulationStore.create.")
        group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        attrs = group.attrs.asdict()
        if attrs.get("format") != cls.FORMAT:
            raise StoreError(f"{path} is a zarr group but not an sbi-tumor simulation store.")
        found = attrs.get("format_version")
        if found != cls.FORMAT_VERSION:
            raise StoreError(
                f"Simulation store {path} has format version {found} (written by sbi-tumor "
                f"{attrs.get('package_version')}), but this sbi-tumor ({package_version()}) reads "
                f"format version {cls.FORMAT_VERSION}; re-run the simulations into a new store or "
                "use the sbi-tumor version that wrote it."
            )
        return cls(group, path)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return self._group.attrs.asdict()

    @property
    def config(self) -> dict[str, Any]:
        return self.attrs["config"]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(self.attrs["grid_shape"])  # type: ignore[return-value]

    @property
    def theta_dim(self) -> int:
        return int(self.attrs["theta_dim"])

    def rounds(self) -> list[int]:
        """Rounds that hold at least one row, ascending."""
        return sorted(int(k.removeprefix("round_")) for k in self._group.group_keys())

    # -- writing ----------------------------------------------------------------------------
    def _round(self, round: int, create: bool):
        key = f"round_{int(round)}"
        if key in self._group:
            return self._group[key]
        if not create:
            raise StoreError(f"Round {round} is not in the store; rounds present: {self.rounds()}.")
        if int(round) < 0:
            raise StoreError(f"Round must be >= 0, got {round}.")
        g = self._group.create_group(key)
        g.create_array("theta", shape=(0, self.theta_dim), dtype="float32",
                       chunks=(self._ROWS_PER_CHUNK, self.theta_dim), fill_value=np.nan)
        g.create_array("x", shape=(0, *self.grid_shape), dtype="uint8",
                       chunks=(1, *self.grid_shape), fill_value=0)
        g.create_array("done", shape=(0,), dtype="bool", chunks=(self._ROWS_PER_CHUNK,),
                       fill_value=False)
        return g

    def _check_batch(self, theta, x) -> tuple[np.ndarray, np.ndarray]:
        theta, x = (torch.as_tensor(a).detach().cpu().numpy() for a in (theta, x))
        if theta.ndim != 2 or theta.shape[1] != self.theta_dim:
            raise StoreError(f"theta must have shape (batch, {self.theta_dim}), got {theta.shape}.")
        if x.shape != (len(theta), *self.grid_shape):
            expected = (len(theta), *self.grid_shape)
            raise StoreError(f"x must have shape {expected} (theta's batch, the store's grid), "
                             f"got {x.shape}.")
        x8 = x.astype(np.uint8)
        if not np.array_equal(x8, x):
            raise StoreError("x must hold integer labels in 0..255 (label maps); got other values.")
        return theta.astype(np.float32), x8

    def write(self, round: int, indices: Sequence[int] | np.ndarray,
              theta: np.ndarray | torch.Tensor, x: np.ndarray | torch.Tensor) -> None:
        """Store simulations at given rows of a round, growing it if needed, and mark them done.

        ``theta``: (B, theta_dim); ``x``: (B, nx, ny, nz) label maps; ``indices``: B distinct
        rows. Rows may be rewritten (e.g. a re-run after a crash).
        """
        theta, x = self._check_batch(theta, x)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.shape != (len(theta),) or np.unique(idx).size != idx.size or (idx < 0).any():
            raise StoreError(f"indices must be {len(theta)} distinct non-negative rows, got {idx}.")
        if idx.size == 0:
            return
        g = self._round(round, create=True)
        n = max(g["done"].shape[0], int(idx.max()) + 1)
        if n > g["done"].shape[0]:
            g["theta"].resize((n, self.theta_dim))
            g["x"].resize((n, *self.grid_shape))
            g["done"].resize((n,))
        order = np.argsort(idx)  # zarr orthogonal selections want increasing indices
        idx, theta, x = idx[order], theta[order], x[order]
        g["theta"].set_orthogonal_selection((idx, slice(None)), theta)
        g["x"].set_orthogonal_selection((idx,), x)
        g["done"].set_orthogonal_selection((idx,), np.ones(idx.size, dtype=bool))

    def append(self, round: int, theta: np.ndarray | torch.Tensor,
               x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Store a batch after the last row of a round; returns the row indices used, (B,)."""
        start = self._round(round, create=True)["done"].shape[0]
        indices = np.arange(start, start + len(theta))
        self.write(round, indices, theta, x)
        return indices

    # -- reading ----------------------------------------------------------------------------
    def _done(self, round: int) -> np.ndarray:
        if f"round_{int(round)}" not in self._group:
            return np.zeros(0, dtype=bool)
        return self._group[f"round_{int(round)}"]["done"][:]

    def completed(self, round: int) -> int:
        """Number of finished simulations in a round (0 for a round not started)."""
        return int(self._done(round).sum())

    def pending(self, round: int, num_simulations: int) -> np.ndarray:
        """Rows in ``0 .. num_simulations - 1`` not yet done: what is left to simulate."""
        done = self._done(round)[:num_simulations]
        return np.concatenate([np.flatnonzero(~done), np.arange(done.size, num_simulations)])

    def load(self, round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Finished rows of a round: theta float32 (N, theta_dim), x uint8 (N, nx, ny, nz)."""
        g = self._round(round, create=False)
        idx = np.flatnonzero(g["done"][:])
        theta = g["theta"].get_orthogonal_selection((idx, slice(None)))
        x = g["x"].get_orthogonal_selection((idx,))
        return torch.from_numpy(np.asarray(theta, np.float32)), torch.from_numpy(np.asarray(x))


#: Inference settings added after 0.3, with the value that reproduces a run started before them.
_NEW_INFERENCE_SETTINGS = {"density_estimator": "mdn", "ensemble_size": 1, "proposal_widening": 2.0,
                           "calibration_solves": 0, "unconstrained": False}


def open_store(path: Path, grid_shape: Sequence[int], settings: dict, resume: bool,
                progress: bool, theta_dim: int = 4) -> SimulationStore:
    """The run's simulation store (label maps of ``grid_shape``, parameter sets of ``theta_dim``):
    created, or reopened and checked to belong to this run."""
    if path.exists():
        if not resume:
            raise FileExistsError(
                f"An interrupted run left simulations in {path.parent}; continue it with "
                f"resume=True (--resume), or delete {path.parent} to start afresh.")
        store = SimulationStore.open(path)
        stored = dict(store.config)
        if isinstance(stored.get("inference"), dict) and isinstance(settings.get("inference"), dict):
            # Settings added since the store was written ran at their defaults, before they existed
            # (NPE_A changed with them: its old runs do not resume).
            added = {k: v for k, v in _NEW_INFERENCE_SETTINGS.items()
                     if k != "proposal_widening" or stored["inference"].get("method") != "NPE_A"}
            stored["inference"] = added | stored["inference"]
        differ = [k for k in settings if json.dumps(stored.get(k), sort_keys=True)
                  != json.dumps(settings[k], sort_keys=True)]
        if differ:
            raise StoreError(
                f"The interrupted run in {path.parent} was started with different "
                f"{' and '.join(differ)} settings; resume with the same inputs and options, or "
                f"delete {path.parent} to start afresh.")
        done = sum(store.completed(r) for r in store.rounds())
        if progress:
            print(f"Resuming: {done} finished simulations found in {path}.", flush=True)
        return store
    if resume:
        if progress:
            print(f"Nothing to resume in {path.parent}; starting afresh.", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SimulationStore.create(path, grid_shape, theta_dim=theta_dim, config=settings)


def stored_simulate(store: SimulationStore, simulator: TumorSimulator | OneScanSimulator, config: InferenceConfig,
                     progress: bool) -> Callable[[int, torch.Tensor], np.ndarray]:
    """``simulate(round, theta)`` for [`run_sequential_npe`][sbi_tumor.inference.run_sequential_npe] that stores each finished batch
    and, on resume, reuses the stored rows (after checking they are the same draws).

    With ``config.augment = K > 1`` each solve's K label maps are K rows of the store, row
    ``n K + k`` holding the k-th parameter pair of solve n (``parameter_pairs``).
    """
    k = config.augment
    dim = store.theta_dim
    observed = simulator if k == 1 else ObservedManyTimes(simulator, dim)

    def simulate(r: int, theta: torch.Tensor) -> np.ndarray:
        pairs = parameter_pairs(theta, dim)
        missing = store.pending(r, len(pairs))
        pending = np.unique(missing // k)  # solves with a map still missing
        done = np.setdiff1d(np.arange(len(pairs)), missing)
        if done.size:
            stored, _ = store.load(r)
            if not torch.equal(stored, pairs[done]):
                raise StoreError(
                    f"The parameters redrawn for the {round_label(r, config.num_rounds)} differ from those stored in "
                    f"{store.path}: this machine does not reproduce the interrupted run (another "
                    "torch version or thread count?). Delete the work directory and start afresh.")
        if pending.size:
            desc = round_label(r, config.num_rounds)
            stored_solves = len(theta) - pending.size

            def write(start: int, tb: torch.Tensor, xb: np.ndarray) -> None:
                rows = (pending[start:start + len(tb), None] * k + np.arange(k)).ravel()
                store.write(r, rows, parameter_pairs(tb, dim), xb.reshape(-1, *xb.shape[2:]))

            simulate_round(observed, theta[pending], config.simulation_batch_size, progress,
                           desc=desc + (f" ({stored_solves} stored)" if stored_solves else ""),
                           num_workers=config.num_workers, client=config.client, on_batch=write)
        _, x = store.load(r)
        return x.reshape(len(theta), k, *x.shape[1:]).numpy()

    return simulate
