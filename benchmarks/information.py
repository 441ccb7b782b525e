"""How much of the label map's information on theta do the radial embedding's profiles keep?

On the matched problem of the NPE-vs-TMCMC benchmark (paper case, masks drawn voxel by voxel
from the Bernoulli likelihood), the Fisher information of the two masks about
theta = (D, rho, u_T1, u_T2) at a truth is ``J = sum_i dp_i dp_i^T / (p_i (1 - p_i))`` over
the voxels i of both masks, ``p_i`` the voxel's tumour probability; its Cramér-Rao bound
``sqrt(diag(J^-1))`` is about the width of the best posterior any method can reach from the
masks (locally, for many voxels). A profile is a set of bin sums ``A y`` of each mask; in the
Gaussian approximation its information is ``(A dp)^T (A Sigma A^T)^-1 (A dp)``. The ratio of the
two bounds per parameter is about how much wider than the best a posterior from those sums alone
is: at most what better features could remove from a network's excess width.

Profiles: the embedding's own spherical shells by octant (``RadialProfileEmbedding``), shells of
the front's travel time from the seed (``travel_time``: in grey matter the front is sqrt(10) times
slower, so a sphere mixes voxels it reached at different times), and both. Derivatives by
differences of the solver, central unless the solver's step count jumps within the step.
Bin sums of each mask stand for the embedding's fractions of the mask code's classes, which
hold them and a little more; the embedding's moments (volume, centroid, extent) are left out.

    python benchmarks/information.py --out benchmarks/results/information.json [--truths 0 1 3]
"""

from __future__ import annotations

import _common  # noqa: F401  (first: OpenMP's passive waiting before torch and numba load)

import argparse
import warnings

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from paper import TRUTHS
from sbi_tumor.benchmark.config import BenchmarkConfig
from sbi_tumor.benchmark.task import MatchedProblem
from sbi_tumor.config import PARAMETER_NAMES
from sbi_tumor.embedding import RadialProfileEmbedding
from _common import emit


def travel_time(diffusivity: np.ndarray, centre: tuple[int, int, int]) -> np.ndarray:
    """How long a Fisher-Kolmogorov front takes from ``centre`` to each voxel, in voxels of white matter.

    The front moves at ``2 sqrt(D(x) rho)``, so with ``D(x) = D k(x)`` its arrival time is
    ``integral ds / sqrt(k)`` along the fastest path (times ``1 / (2 sqrt(D rho))``): the same map,
    up to that factor, for every (D, rho). Shortest paths over the 26 neighbours of each voxel
    (scipy's Dijkstra), an edge of length ``l`` costing ``l / mean(sqrt(k))`` of its two voxels.

    Args:
        diffusivity: relative diffusivity ``k`` (white matter 1, no diffusion 0), ``(nx, ny, nz)``.
        centre: voxel index of the origin.

    Returns:
        ``(nx, ny, nz)`` float64; ``inf`` where no path through tissue reaches (CSF, background).
    """
    speed = np.sqrt(np.clip(np.asarray(diffusivity, dtype=np.float64), 0, None))
    shape = speed.shape
    index = np.arange(speed.size).reshape(shape)
    rows, cols, costs = [], [], []
    for step in np.ndindex(3, 3, 3):
        step = np.array(step) - 1
        if tuple(step) <= (0, 0, 0):  # each edge once; the graph is undirected
            continue
        here = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(step, shape))
        there = tuple(slice(a.start + d, a.stop + d) for a, d in zip(here, step))
        a, b = index[here].ravel(), index[there].ravel()
        mean = 0.5 * (speed.ravel()[a] + speed.ravel()[b])
        ok = (speed.ravel()[a] > 0) & (speed.ravel()[b] > 0)
        rows.append(a[ok]), cols.append(b[ok]), costs.append(np.linalg.norm(step) / mean[ok])
    graph = coo_matrix((np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(speed.size, speed.size)).tocsr()
    return dijkstra(graph, directed=False, indices=int(index[centre])).reshape(shape)


def mask_derivatives(problem: MatchedProblem, theta: np.ndarray, step: float = 1e-3):
    """Tumour probabilities ``p (2N,)`` of the T1 then the T2 mask's voxels at theta, and
    ``dp / dtheta (2N, 4)``."""
    def density(t):
        return problem.simulator.density(np.asarray(t)[None], [problem.day])[0, 0].astype(np.float64).ravel()

    def steps(t):
        return problem.simulator.solver.n_steps(t[0], t[1], [problem.day])

    u = density(theta)
    du = []
    for k in (0, 1):  # D and rho: differences with a relative step
        up, down = theta.copy(), theta.copy()
        up[k] *= 1 + step
        down[k] *= 1 - step
        # The solver's step count is an integer function of (D, rho): a difference across one of its
        # jumps measures the jump (6% off in rho at the paper truth). Stay on the truth's side.
        if steps(up) != steps(theta):
            du.append((u - density(down)) / (step * theta[k]))
        elif steps(down) != steps(theta):
            du.append((density(up) - u) / (step * theta[k]))
        else:
            du.append((density(up) - density(down)) / (2 * step * theta[k]))
    assert problem.likelihood.form == "logistic", "the derivative below is the logistic link's"
    slope, eps = problem.likelihood.slope, problem.likelihood.eps
    probabilities, derivatives = [], []
    for column, threshold in ((2, theta[2]), (3, theta[3])):
        p = 1 / (1 + np.exp(-(u - threshold) / slope))
        # the likelihood clips p to [eps, 1 - eps]: no information where the clip acts
        dp_du = np.where((p > eps) & (p < 1 - eps), p * (1 - p) / slope, 0.0)
        dp = np.zeros((len(u), 4))
        dp[:, 0], dp[:, 1], dp[:, column] = dp_du * du[0], dp_du * du[1], -dp_du
        probabilities.append(np.clip(p, eps, 1 - eps))
        derivatives.append(dp)
    return np.concatenate(probabilities), np.concatenate(derivatives)


def profile_information(binnings: list[np.ndarray], p: np.ndarray, dp: np.ndarray) -> np.ndarray:
    """Fisher information (4, 4) of the bin sums of each mask, for every binning ``(N,)`` given."""
    n = len(p) // 2
    rows, offset = [], 0
    for bins in binnings:
        for _ in (0, 1):  # the T1 mask's sums, then the T2 mask's
            rows.append(offset + bins)
            offset += int(bins.max()) + 1
    columns = np.concatenate([np.arange(n) + mask * n for _ in binnings for mask in (0, 1)])
    A = coo_matrix((np.ones(len(columns)), (np.concatenate(rows), columns)), shape=(offset, 2 * n)).tocsr()
    mean = A @ dp
    covariance = (A.multiply(p * (1 - p)) @ A.T).toarray()
    keep = np.diag(covariance) > 1e-12
    # pinv: a spherical and a travel-time bin may hold the same voxels (the centre's), which makes
    # the two bin sums one and the covariance singular
    return mean[keep].T @ np.linalg.pinv(covariance[np.ix_(keep, keep)], hermitian=True) @ mean[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truths", type=int, nargs="+", default=[0, 1, 3],
                        help="indices into benchmarks/paper.py's TRUTHS (default: the three with a T1 core)")
    parser.add_argument("--out")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The tumour density reaches")
        problem = MatchedProblem.create(BenchmarkConfig(case="paper"))
    simulator = problem.simulator
    shape = simulator.roi.shape
    spherical = RadialProfileEmbedding(shape, num_classes=4).bin.numpy()
    # travel-time shells one voxel of white matter wide around the seed (the ROI's centre, as the
    # embedding's), and one bin for the voxels no path through tissue reaches
    time = travel_time(simulator.roi.relative_diffusivity(simulator.solver.config.ratio),
                       tuple((n - 1) // 2 for n in shape)).reshape(-1)
    travel = np.where(np.isfinite(time), np.floor(np.nan_to_num(time, posinf=0.0)) + 1, 0).astype(np.int64)
    profiles = {"spherical_octants": [spherical], "travel_time": [travel], "both": [spherical, travel]}
    results = {"case": "paper", "roi_shape": list(shape), "likelihood_slope": problem.likelihood.slope, "truths": []}
    for index in args.truths:
        theta = np.asarray(TRUTHS[index], dtype=np.float64)
        p, dp = mask_derivatives(problem, theta)
        full = np.sqrt(np.diag(np.linalg.inv(dp.T @ (dp / (p * (1 - p))[:, None]))))
        row = {"truth": theta.tolist(), "best_sd_relative": dict(zip(PARAMETER_NAMES, (full / theta).tolist()))}
        for name, binnings in profiles.items():
            bound = np.sqrt(np.diag(np.linalg.inv(profile_information(binnings, p, dp))))
            row[f"{name}_width_ratio"] = dict(zip(PARAMETER_NAMES, (bound / full).tolist()))
        results["truths"].append(row)
    emit(results, args.out)


if __name__ == "__main__":
    main()
