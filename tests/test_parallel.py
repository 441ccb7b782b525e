"""Parallel and distributed simulation: a real two-worker Dask LocalCluster gives the results of a
local run; failing batches are retried or reported with their parameters; the torch backend."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sbi_tumor.parallel import WORKER_ENV, SimulationError, simulate
from sbi_tumor.simulator import TumorSimulator
from conftest import phantom

distributed = pytest.importorskip("distributed")

THETA = torch.tensor([[0.3, 1.0, 0.7, 0.25], [0.5, 0.3, 0.6, 0.2], [1.0, 0.8, 0.8, 0.1], [0.2, 0.5, 0.7, 0.3],
                      [0.8, 0.6, 0.5, 0.4], [0.4, 0.9, 0.9, 0.05], [0.6, 0.4, 0.7, 0.25]])


def tiny_simulator(backend: str = "numba", **kwargs) -> TumorSimulator:
    return TumorSimulator(phantom((20, 20, 20)), seed_mm=(10.0, 10.0, 10.0), day=3.0, roi_size_mm=16.0,
                          backend=backend, **kwargs)


class RaisesOn:
    """Raises for one parameter set, every time."""

    def __init__(self, simulator: TumorSimulator, bad: torch.Tensor):
        self.simulator, self.bad = simulator, bad

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        if (theta == self.bad).all(1).any():
            raise FloatingPointError("solver blew up")
        return self.simulator(theta)


class FailsOnce:
    """Raises on its first call in any process (a marker file remembers the failure)."""

    def __init__(self, simulator: TumorSimulator, marker: Path):
        self.simulator, self.marker = simulator, marker

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        if not self.marker.exists():
            self.marker.touch()
            raise ConnectionError("worker lost")
        return self.simulator(theta)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  env=WORKER_ENV) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def local():
    return simulate(tiny_simulator(), THETA, batch_size=2, progress=False)


def test_local_run_is_the_simulator(local):
    assert local.dtype == np.uint8 and local.shape == (len(THETA), 1, 17, 17, 17)
    np.testing.assert_array_equal(local, tiny_simulator()(THETA).numpy())
    assert (local == 2).any() and (local == 1).any()


@pytest.mark.parametrize("address", [False, True])
def test_dask_equals_local_run(client, local, address):
    seen = []
    x = simulate(tiny_simulator(), THETA, batch_size=2, progress=False,
                 client=client.scheduler.address if address else client,
                 on_batch=lambda start, theta, xb: seen.append((start, theta, xb)))
    np.testing.assert_array_equal(x, local)
    assert sorted(s for s, _, _ in seen) == [0, 2, 4, 6]  # every batch once, ...
    for start, theta, xb in seen:  # ... with its own parameters and results
        assert torch.equal(theta, THETA[start:start + 2])
        np.testing.assert_array_equal(xb, local[start:start + 2])


@pytest.mark.parametrize("where", ["local", "dask"])
def test_failing_parameter_set_is_reported(client, where):
    bad = RaisesOn(tiny_simulator(), THETA[3])
    with pytest.raises(SimulationError, match="round 2") as info:
        simulate(bad, THETA, batch_size=2, progress=False, retries=2, desc="round 2",
                 client=client if where == "dask" else None)
    message = str(info.value)
    assert "failed 3 time(s)" in message and "FloatingPointError: solver blew up" in message
    assert "row 3: [0.2, 0.5, 0.7, 0.3]" in message
    assert info.value.start == 2 and np.allclose(info.value.theta, THETA[2:4])


@pytest.mark.parametrize("where", ["local", "dask"])
def test_flaky_batch_is_retried(client, local, tmp_path, where):
    flaky = FailsOnce(tiny_simulator(), tmp_path / "failed-once")
    x = simulate(flaky, THETA, batch_size=2, progress=False, client=client if where == "dask" else None)
    assert (tmp_path / "failed-once").exists()
    np.testing.assert_array_equal(x, local)
    with pytest.raises(SimulationError, match="ConnectionError"):  # no retries: reported
        (tmp_path / "failed-once").unlink()
        simulate(flaky, THETA, batch_size=2, progress=False, retries=0)


def test_local_processes_equal_local_run(local):
    x = simulate(tiny_simulator(), THETA, batch_size=3, num_workers=2, progress=False)
    np.testing.assert_array_equal(x, local)


def test_torch_backend_agrees_with_numba():
    numba_sim = tiny_simulator()
    torch_sim = tiny_simulator("torch", device="cpu")
    assert numba_sim.resolved_backend == "numba" and torch_sim.resolved_backend == "torch"
    u_numba = numba_sim.density(THETA, [1.0, 3.0])
    u_torch = torch_sim.density(THETA, [1.0, 3.0])
    # Labels may differ at exact threshold ties: compare densities.
    np.testing.assert_allclose(u_torch, u_numba, atol=1e-4)
    assert u_torch.max() > 0.5
    # The torch solver is rebuilt after pickling (it holds device tensors).
    assert torch_sim._torch_solver is not None
    clone = pickle.loads(pickle.dumps(torch_sim))
    assert clone._torch_solver is None and clone.resolved_backend == "torch"
    np.testing.assert_array_equal(clone.density(THETA[:2], [1.0, 3.0]), u_torch[:2])


def test_backend_choice():
    # auto: torch on a GPU, numba on the CPU (where it is faster); a device asks for torch.
    assert tiny_simulator("auto").resolved_backend == ("torch" if torch.cuda.is_available() else "numba")
    assert tiny_simulator("auto", device="cpu").resolved_backend == "torch"
    with pytest.raises(ValueError, match="backend must be"):
        tiny_simulator("jax")
