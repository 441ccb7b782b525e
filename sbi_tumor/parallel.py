"""Run the simulations of a round: in this process, in local worker processes, or on a Dask cluster.

Every path returns the same uint8 label maps ``(N, 1, nx, ny, nz)`` in the order of ``theta``:
the simulator is deterministic and results are placed by index, whatever order batches finish
in. uint8 is what is held until the round is handed to sbi (a quarter of float32).

Locally, the numba solver already spreads one simulation over all cores; on a 2-core machine
two single-threaded worker processes are no faster (``benchmarks/parallel.py``), so
``num_workers=1`` (in this process) is the default. Beyond one machine, Dask runs the batches:
pass a ``dask.distributed.Client`` or a scheduler address (``"tcp://HOST:PORT"``). The
simulator is sent to every worker once, then only parameter batches travel.

A batch that raises (in the simulator, or because its worker died) is run again up to
``retries`` times; if it still fails, [`SimulationError`][sbi_tumor.parallel.SimulationError] names the batch and its
parameter rows. A round never loses simulations silently.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from .runtime import OPENMP_ENV, set_threads

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["SimulationError", "simulate"]

OnBatch = Callable[[int, torch.Tensor, np.ndarray], None]

# Environment of worker processes: passive OpenMP waiting (see sbi_tumor.runtime) must be set
# before their torch or numba load.
WORKER_ENV = OPENMP_ENV


class SimulationError(RuntimeError):
    """A batch of simulations failed after all retries.

    Attributes:
        desc: what was being simulated (e.g. the round).
        start: index of the batch's first row in the round's theta.
        theta: the parameter rows of the failed batch, ``(B, 4)``.
    """

    def __init__(self, desc: str, start: int, theta: np.ndarray, attempts: int, cause: BaseException):
        self.desc, self.start, self.theta = desc, start, theta
        rows = "\n".join(f"  row {start + i}: {np.array2string(t, precision=6, separator=', ')}"
                         for i, t in enumerate(theta))
        super().__init__(f"{desc}: the batch of rows {start}-{start + len(theta) - 1} failed "
                         f"{attempts} time(s); last error: {type(cause).__name__}: {cause}\n"
                         f"Parameter sets of the batch:\n{rows}")


# One simulation at a time per process: the numba kernel already uses every core, and its
# threading layer may not be entered from several threads (e.g. a Dask worker's thread pool).
_LOCK = threading.Lock()


def run_batch(simulator: Callable, theta: np.ndarray) -> np.ndarray:
    """Simulate one batch, uint8 ``(B, 1, nx, ny, nz)``; ``theta`` ``(B, 4)``."""
    with _LOCK:
        x = simulator(torch.from_numpy(theta))
    return (x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.uint8)


def simulate(simulator: Callable, theta: torch.Tensor | np.ndarray, *, batch_size: int = 10,
             num_workers: int = 1, client: Client | str | None = None, progress: bool = True,
             desc: str = "simulations", on_batch: OnBatch | None = None, retries: int = 1) -> np.ndarray:
    """Label maps of every parameter set, uint8 ``(N, 1, nx, ny, nz)`` in the order of ``theta``.

    Args:
        simulator: ``simulator(theta (B, 4)) -> x (B, 1, nx, ny, nz)``, picklable for workers.
        theta: parameter sets, ``(N, 4)``.
        batch_size: parameter sets per simulator call (and per task).
        num_workers: local worker processes; 1 runs in this process. Ignored with ``client``.
        client: a ``dask.distributed.Client`` or a scheduler address: run the batches there.
        progress: show a progress bar.
        desc: label of the progress bar and of errors (e.g. ``"round 2/4 simulations"``).
        on_batch: ``on_batch(start, theta_batch, x_batch)`` in this process as each batch
            finishes, in completion order (e.g. to store it).
        retries: extra attempts of a failed batch before [`SimulationError`][sbi_tumor.parallel.SimulationError].
    """
    from tqdm.auto import tqdm

    theta_t = torch.as_tensor(theta)
    theta_np = theta_t.detach().cpu().numpy()
    starts = range(0, len(theta_np), batch_size)
    out: np.ndarray | None = None
    with tqdm(total=len(theta_np), desc=desc, unit="sim", disable=not progress) as bar:
        if client is not None:
            results = _on_dask(client, simulator, theta_np, starts, batch_size, desc, retries)
        elif num_workers > 1:
            results = _on_processes(num_workers, simulator, theta_np, starts, batch_size, desc, retries)
        else:
            results = _in_process(simulator, theta_np, starts, batch_size, desc, retries)
        for start, x in results:
            if out is None:  # the shape is known once the first batch is back
                out = np.empty((len(theta_np),) + x.shape[1:], dtype=np.uint8)
            out[start:start + len(x)] = x
            if on_batch is not None:
                on_batch(start, theta_t[start:start + len(x)], x)
            bar.update(len(x))
    if out is None:  # no parameter sets
        out = np.empty((0,) + tuple(getattr(simulator, "x_shape", (1, 0, 0, 0))), dtype=np.uint8)
    return out


Results = Iterator[tuple[int, np.ndarray]]


def _checked(x: np.ndarray, batch: np.ndarray) -> np.ndarray:
    if len(x) != len(batch):
        raise RuntimeError(f"the simulator returned {len(x)} results for {len(batch)} parameter sets")
    return x


def _in_process(simulator: Callable, theta: np.ndarray, starts: range, batch_size: int, desc: str,
                retries: int) -> Results:
    for start in starts:
        batch = theta[start:start + batch_size]
        for attempt in range(retries + 1):
            try:
                yield start, _checked(run_batch(simulator, batch), batch)
                break
            except Exception as err:  # noqa: BLE001 - reported with its parameters below
                if attempt == retries:
                    raise SimulationError(desc, start, batch, attempt + 1, err) from err


class _Pending:
    """Submitted batches by future; resubmits a failed batch, raises when it is out of retries."""

    def __init__(self, submit: Callable[[np.ndarray], Any], theta: np.ndarray, starts: range,
                 batch_size: int, desc: str, retries: int):
        self.submit, self.theta, self.batch_size = submit, theta, batch_size
        self.desc, self.retries = desc, retries
        self.attempts: dict[int, int] = {}
        self.futures: dict[Any, int] = {}
        for start in starts:
            self._submit(start)

    def _submit(self, start: int) -> Any:
        self.attempts[start] = self.attempts.get(start, 0) + 1
        future = self.submit(self.theta[start:start + self.batch_size])
        self.futures[future] = start
        return future

    def done(self, future: Any) -> tuple[int, np.ndarray] | Any:
        """``(start, x)`` of a finished batch, or the future of the failed batch's next attempt."""
        start = self.futures.pop(future)
        batch = self.theta[start:start + self.batch_size]
        try:
            return start, _checked(future.result(), batch)
        except Exception as err:  # noqa: BLE001 - a simulator error or a dead worker
            if self.attempts[start] <= self.retries:
                try:
                    return self._submit(start)
                except Exception:  # noqa: BLE001 - the pool itself is broken: report the batch
                    pass
            for other in self.futures:
                other.cancel()
            raise SimulationError(self.desc, start, batch, self.attempts[start], err) from err


def _on_dask(client: Client | str, simulator: Callable, theta: np.ndarray, starts: range,
             batch_size: int, desc: str, retries: int) -> Results:
    from distributed import Client, as_completed

    own = isinstance(client, str)
    if own:
        client = Client(client)
    try:
        # Sent once to every worker, rather than once per task.
        remote = client.scatter(simulator, broadcast=True, hash=False)
        pending = _Pending(lambda batch: client.submit(run_batch, remote, batch, pure=False),
                           theta, starts, batch_size, desc, retries)
        finished = as_completed(list(pending.futures))
        for future in finished:
            result = pending.done(future)
            if isinstance(result, tuple):
                yield result
            else:
                finished.add(result)
    finally:
        if own:
            client.close()


_worker_simulator: Callable | None = None


def _init_worker(simulator: Callable, threads: int) -> None:
    """Keep the simulator in the worker process; share the cores among the workers."""
    global _worker_simulator

    _worker_simulator = simulator
    set_threads(threads)


def _worker_batch(theta: np.ndarray) -> np.ndarray:
    return run_batch(_worker_simulator, theta)


def _on_processes(num_workers: int, simulator: Callable, theta: np.ndarray, starts: range,
                  batch_size: int, desc: str, retries: int) -> Results:
    threads = max(1, (os.cpu_count() or 1) // num_workers)
    os.environ.update(WORKER_ENV)  # inherited by the workers before their imports
    # spawn, not fork: forking a process whose OpenMP runtime already runs threads is unsafe.
    with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(simulator, threads)) as pool:
        pending = _Pending(lambda batch: pool.submit(_worker_batch, batch), theta, starts, batch_size,
                           desc, retries)
        while pending.futures:
            finished, _ = wait(list(pending.futures), return_when=FIRST_COMPLETED)
            for future in finished:
                result = pending.done(future)
                if isinstance(result, tuple):
                    yield result
