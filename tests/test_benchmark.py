import json

import numpy as np
import pytest
import torch

from sbi_tumor.benchmark import cli, report, runners
from sbi_tumor.benchmark.report import markdown_table
from sbi_tumor.benchmark.config import BenchmarkConfig
from sbi_tumor.benchmark.task import MatchedProblem
from sbi_tumor.metrics import posterior_metrics
from sbi_tumor.observation import encode_masks
from sbi_tumor.observation import dice


def test_mask_code_is_lossless():
    rng = np.random.default_rng(0)
    t1, t2 = rng.random((2, 5, 6, 7)) < 0.5
    code = encode_masks(t1, t2)
    assert code.dtype == np.uint8 and set(np.unique(code)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(code % 2 == 1, t2)
    np.testing.assert_array_equal(code >= 2, t1)


def test_dice():
    a = np.zeros((4, 4), bool)
    assert dice(a, a) == 1.0
    b = a.copy()
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)


def test_posterior_metrics_coverage_and_errors():
    truth = np.array([2.0, 0.6, 0.7, 0.25])
    samples = truth * np.random.default_rng(0).normal(1.0, 0.01, (2000, 4))
    m = posterior_metrics(samples, truth * 1.1, truth)
    assert all(m[n]["truth_in_90"] for n in ("D", "rho", "u_T1", "u_T2"))
    assert m["D"]["map_rel_error"] == pytest.approx(0.1)
    assert m["front_speed"]["truth"] == pytest.approx(2 * np.sqrt(1.2))
    assert m["infiltration_length"]["mean_rel_error"] < 0.01
    # A skewed posterior: the median sits at the truth, the mean well above it.
    skewed = truth * np.random.default_rng(0).lognormal(0.0, 0.5, (20001, 4))
    m = posterior_metrics(skewed, truth, truth)
    assert m["D"]["median_rel_error"] < 0.02 and m["D"]["mean_rel_error"] > 0.1


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="case"):
        BenchmarkConfig(case="human")
    with pytest.raises(ValueError, match="budget"):
        BenchmarkConfig(budgets=(6,), npe_rounds=4)
    with pytest.raises(ValueError, match=r"npe_settings \['num_rounds', 'wings'\] are not InferenceConfig settings"):
        BenchmarkConfig(npe_settings={"wings": 2, "num_rounds": 3})  # num_rounds: npe_rounds
    assert BenchmarkConfig(npe_settings={"density_estimator": "nsf"}).npe_settings == {"density_estimator": "nsf"}
    with pytest.raises(ValueError, match="npe_method must be one of"):
        BenchmarkConfig(npe_method="SNLE")
    with pytest.raises(ValueError, match="npe_augment must be 1, or > 1 with npe_method 'TSNPE'"):
        BenchmarkConfig(npe_method="NPE_B", npe_augment=10)


def test_parser_registers_npe_vs_mcmc():
    import argparse
    import shlex

    parser = argparse.ArgumentParser()
    cli.add_benchmark_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["benchmark", "npe-vs-mcmc", "--budgets", "500", "1000", "--out", "x"])
    config = cli.config_from_args(args)
    assert config.budgets == (500, 1000) and config.embedding == "radial" and config.npe_method == "TSNPE"
    assert cli.command_line(args).startswith("sbi-tumor benchmark npe-vs-mcmc --case paper --budgets 500 1000")
    args = parser.parse_args(["benchmark", "npe-vs-mcmc", "--method", "TSNPE", "--augment", "10",
                              "--embedding", "radial",
                              "--embedding-kwargs", '{"octants": true}', "--log-space", "--out", "x"])
    config = cli.config_from_args(args)
    assert config.npe_method == "TSNPE" and config.embedding == "radial" and config.npe_log_space
    assert config.npe_augment == 10
    assert config.embedding_kwargs == {"octants": True}
    command = cli.command_line(args)
    assert command.endswith("""--embedding-kwargs '{"octants": true}' --log-space --random-seed 0 --out x""")
    assert "--method TSNPE --augment 10 --embedding radial" in command
    assert parser.parse_args(shlex.split(command)[1:]) == args  # the recorded command reproduces the run


@pytest.mark.slow
def test_quick_benchmark_writes_results(tmp_path, monkeypatch):
    from sbi_tumor.simulator import TumorSimulator

    solves = []
    density = TumorSimulator.density

    def counting_density(self, theta, days, progress=False):
        out = density(self, theta, days, progress)
        solves.append(len(out))
        return out

    monkeypatch.setattr(TumorSimulator, "density", counting_density)
    out = tmp_path / "bench"
    assert cli.main(["--quick", "--random-seed", "1", "--out", str(out)]) == 0

    results = json.loads((out / "results.json").read_text())
    assert {"config", "case", "reference", "runs", "target", "command", "total_wall_time_s"} <= set(results)
    runs = {(r["method"], r["budget"]): r for r in results["runs"]}
    assert set(runs) == {("NPE", 120), ("TMCMC", 120), ("TMCMC", 480)}
    assert runs["NPE", 120]["num_simulations"] == 120
    # Every solve is accounted for: the truth, the reference, the runs and one Dice solve each.
    counted = results["reference"]["num_simulations"] + sum(r["num_simulations"] for r in runs.values())
    assert sum(solves) == 1 + counted + len(runs) + 1
    for r in runs.values():
        assert 0.45 <= r["c2st"] <= 1.0
        assert all(0.0 <= v <= 1.0 for v in r["map_dice"].values())
        assert set(r["parameters"]) >= {"D", "rho", "u_T1", "u_T2", "front_speed", "infiltration_length"}
    assert isinstance(results["target"]["met"], bool)

    table = (out / "table.md").read_text()
    assert "| NPE | 120 | 120 |" in table and results["command"] in table
    for name in ("accuracy.png", "pairplot_120.png", "pairplot_480.png"):
        assert 0 < (out / name).stat().st_size <= 200_000
    samples = np.load(out / "samples.npz")
    assert samples["NPE_120"].shape == (300, 4)


@pytest.mark.filterwarnings("ignore:The importance weights")  # 20 solves after a 40-solve NPE: few
@pytest.mark.filterwarnings("ignore:Training stopped at max_num_epochs")  # the quick config's 15 epochs
def test_npe_refined_with_the_likelihood_spends_the_budget_and_keeps_npes_own_samples():
    config = BenchmarkConfig.quick(budgets=(60,), refine_solves=(10, 10))
    problem = MatchedProblem.create(config)
    run = runners.run_npe(problem, 60, config, seed=1)
    assert run["num_simulations"] == 60  # 2 NPE rounds of 20 solves, then 2 x 10 for the refinement
    assert run["extra"]["refine_solves"] == [10, 10] and len(run["extra"]["effective_sample_sizes"]) == 2
    assert run["samples"].shape == run["npe_samples"].shape == (300, 4)
    assert not np.allclose(run["samples"].mean(0), run["npe_samples"].mean(0))
    assert torch.isfinite(problem.prior.log_prob(torch.as_tensor(run["samples"], dtype=torch.float32))).all()
    assert run["map"].shape == (4,)  # Refinement.map is checked in test_importance
    with pytest.raises(ValueError, match="after 50 refinement solves"):
        BenchmarkConfig.quick(budgets=(52,), refine_solves=(25, 25))
    with pytest.raises(ValueError, match="refine_solves must be positive"):
        BenchmarkConfig(refine_solves=(0,))


def test_markdown_table_marks_target():
    row = {"method": "NPE", "budget": 10, "num_simulations": 10, "wall_time_s": 1.0, "c2st": 0.7,
           "parameters": {n: {"mean_rel_error": 0.1, "map_rel_error": 0.2, "truth_in_90": n != "rho"}
                          for n in ("D", "rho", "u_T1", "u_T2", "front_speed")},
           "map_dice": {"T1_day9": 0.5, "T2_day9": 0.9, "T1_day11": 0.4, "T2_day11": 0.8}}
    results = {"case": {"name": "paper", "truth": {"D": 2, "rho": 0.6, "u_T1": 0.7, "u_T2": 0.25}, "day": 9,
                        "validation_day": 11, "roi_shape": [3, 3, 3]},
               "reference": {"num_samples": 5, "num_simulations": 50}, "runs": [row],
               "target": {"npe_budget": 10, "tmcmc_budget": 100, "npe_c2st": 0.7, "tmcmc_c2st": 0.8, "met": True}}
    table = markdown_table(results, "sbi-tumor benchmark npe-vs-mcmc --quick")
    assert "| NPE | 10 | 10 | 1 | 0.700 | 10.0 / 10.0 / 10.0 / 10.0 | 20.0 / 20.0 / 20.0 / 20.0 | ynyy |" in table
    assert "0.900 / 0.500 | 0.800 / 0.400 |" in table
    assert ": met (0.700 vs 0.800)" in table


def test_target_is_not_met_when_both_runs_are_told_apart_from_the_reference():
    config = BenchmarkConfig.quick()
    runs = [{"method": "NPE", "budget": 120, "c2st": 0.995}, {"method": "TMCMC", "budget": 480, "c2st": 1.0}]
    target = runners._target(runs, config)
    assert target["met"] is False and target["both_distinguishable"] is True
    runs[0]["c2st"] = 0.80
    assert runners._target(runs, config)["met"] is True


def test_seeds_summary_counts_met_seeds():
    def seed_results(seed, npe, mcmc):
        return {"config": {"seed": seed}, "runs": [{"method": "NPE", "budget": 1000, "c2st": npe},
                                                   {"method": "TMCMC", "budget": 10000, "c2st": mcmc}],
                "target": {"met": npe <= mcmc}}

    summary = report.seeds_summary([seed_results(0, 0.6, 0.7), seed_results(1, 0.9, 0.8),
                                       seed_results(2, 0.65, 0.7)])
    assert summary["c2st"]["NPE 1000"]["mean"] == pytest.approx(0.7166667, rel=1e-6)
    assert summary["target"] == {"method": "NPE", "met_per_seed": [True, False, True], "met": 2, "of": 3,
                                 "required": 3}
    table = report.seeds_table(summary)
    assert "| NPE 1000 | 0.600 | 0.900 | 0.650 | 0.717 ± 0.131 |" in table
    assert "on 3 of 3 seeds: not met (2 of 3; seed 0: met, seed 1: missed, seed 2: met)" in table
