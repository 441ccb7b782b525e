"""Tables and figures of the NPE-vs-MCMC benchmark, for one seed and across seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PARAMETER_LABELS
from .runners import C2ST_DISTINGUISHABLE, NPE, REFINED

__all__ = ["markdown_table", "seeds_summary", "seeds_table", "write_outputs"]


def markdown_table(results: dict[str, Any], command: str | None = None) -> str:
    """The results as a markdown table (plus the command that produced them)."""
    names = ("D", "rho", "u_T1", "u_T2")
    case = results["case"]
    days = (f"day{case['day']:g}", f"day{case['validation_day']:g}")
    lines = []
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        f"Case `{case['name']}`: truth D={case['truth']['D']:g} mm²/day, ρ={case['truth']['rho']:g}/day, "
        f"u_T1={case['truth']['u_T1']:g}, u_T2={case['truth']['u_T2']:g}; observation drawn from the "
        f"Bernoulli likelihood at day {case['day']:g} on a {'×'.join(map(str, case['roi_shape']))} ROI; "
        f"validation day {case['validation_day']:g}. Reference: TMCMC with {results['reference']['num_samples']} "
        f"samples and {results['reference']['num_simulations']} simulations.",
        "",
        "Errors are relative errors in % for D / ρ / u_T1 / u_T2; 90% CI lists whether each truth lies in "
        "the central 90% interval (y/n); v = 2√(Dρ) is the front speed; Dice of the MAP tumour against the "
        "true one (T2 whole tumour / T1 core).",
        "",
        "| method | budget | simulations | wall [s] | C2ST ↓ | mean error (%) | MAP error (%) | 90% CI | "
        f"v error (%) | Dice {days[0]} | Dice {days[1]} |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---|---|",
    ]
    for r in results["runs"]:
        p = r["parameters"]
        mean = " / ".join(f"{100 * p[n]['mean_rel_error']:.1f}" for n in names)
        map_ = " / ".join(f"{100 * p[n]['map_rel_error']:.1f}" for n in names)
        ci = "".join("y" if p[n]["truth_in_90"] else "n" for n in names)
        dices = [f"{r['map_dice'][f'T2_{d}']:.3f} / {r['map_dice'][f'T1_{d}']:.3f}" for d in days]
        lines.append(f"| {r['method']} | {r['budget']} | {r['num_simulations']} | {r['wall_time_s']:.0f} | "
                     f"{r['c2st']:.3f} | {mean} | {map_} | {ci} | "
                     f"{100 * p['front_speed']['mean_rel_error']:.1f} | {dices[0]} | {dices[1]} |")
    target = results.get("target")
    if target:
        lines += ["", f"Target ({target.get('method', NPE)} at {target['npe_budget']} simulations at least as accurate as TMCMC at "
                      f"{target['tmcmc_budget']}, by C2ST): {'met' if target['met'] else 'not met'} "
                      f"({target['npe_c2st']:.3f} vs {target['tmcmc_c2st']:.3f}"
                      + (f"; both at or above {C2ST_DISTINGUISHABLE}, so both fail" if target.get("both_distinguishable")
                         else "") + ")."]
    return "\n".join(lines) + "\n"


def plot_accuracy(results: dict[str, Any], path: Path) -> None:
    """Relative errors of front speed and infiltration length, and C2ST, against simulations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("front_speed", "front speed 2√(Dρ): rel. error of mean"),
              ("infiltration_length", "infiltration length √(D/ρ): rel. error of mean"), ("c2st", "C2ST")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for method, style in ((NPE, "o-"), (REFINED, "^-"), ("TMCMC", "s--")):
        rows = sorted((r for r in results["runs"] if r["method"] == method), key=lambda r: r["num_simulations"])
        if not rows:
            continue
        n = [r["num_simulations"] for r in rows]
        for ax, (key, title) in zip(axes, panels):
            y = [r["c2st"] if key == "c2st" else r["parameters"][key]["mean_rel_error"] for r in rows]
            ax.plot(n, y, style, label=method)
            ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("forward simulations")
        ax.grid(alpha=0.3, which="both")
    axes[2].axhline(0.5, color="k", lw=0.8, ls=":")
    axes[2].set_ylim(0.45, 1.02)
    axes[0].legend()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_pairs(sets: dict[str, np.ndarray], truth: np.ndarray, path: Path, title: str) -> None:
    """Corner plot of several posterior sample sets with the truth marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = np.concatenate(list(sets.values()) + [truth[None]])
    lo, hi = np.quantile(everything, 0.005, axis=0), np.quantile(everything, 0.995, axis=0)
    lo, hi = np.minimum(lo, truth), np.maximum(hi, truth)
    pad = 0.05 * (hi - lo) + 1e-9
    lo, hi = lo - pad, hi + pad
    d = len(truth)
    colors = dict(zip(sets, ["0.55", "C0", "C1", "C2", "C3"]))
    fig, axes = plt.subplots(d, d, figsize=(8, 8), constrained_layout=True)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            for name, s in sets.items():
                if i == j:
                    ax.hist(s[:, i], bins=40, range=(lo[i], hi[i]), density=True, histtype="step",
                            color=colors[name], label=f"{name} ({len(s)})")
                else:
                    ax.scatter(s[:, j], s[:, i], s=2, alpha=0.3, color=colors[name], rasterized=True)
            if i == j:
                ax.axvline(truth[i], color="k", lw=1)
                ax.set_yticks([])
            else:
                ax.plot(truth[j], truth[i], "k*", ms=10)
                ax.set_ylim(lo[i], hi[i])
            ax.set_xlim(lo[j], hi[j])
            if i == d - 1:
                ax.set_xlabel(PARAMETER_LABELS[j])
            if j == 0 and i > 0:
                ax.set_ylabel(PARAMETER_LABELS[i])
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.1, 1.0), fontsize=9, frameon=False)
    fig.suptitle(title)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def write_outputs(directory: Path, results: dict[str, Any], samples: dict[str, np.ndarray],
                  command: str | None = None) -> None:
    """``results.json``, ``table.md``, ``samples.npz``, ``accuracy.png``, ``pairplot_<budget>.png``."""
    (directory / "results.json").write_text(json.dumps(results, indent=2))
    (directory / "table.md").write_text(markdown_table(results, command))
    np.savez_compressed(directory / "samples.npz", **{k: v.astype(np.float32) for k, v in samples.items()})
    plot_accuracy(results, directory / "accuracy.png")
    truth = np.array(list(results["case"]["truth"].values()))
    for budget in sorted({r["budget"] for r in results["runs"]}):
        sets = {"reference": samples["reference"]}
        sets.update({f"{r['method']} {budget}": samples[f"{r['method']}_{budget}"]
                     for r in results["runs"] if r["budget"] == budget})
        plot_pairs(sets, truth, directory / f"pairplot_{budget}.png",
                   f"{results['case']['name']}: posteriors at a budget of {budget} simulations")


def seeds_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """C2ST of every run across seeds (each seed: a new observation, reference and training)."""
    rows = {}
    for results in per_seed:
        for r in results["runs"]:
            rows.setdefault(f"{r['method']} {r['budget']}", []).append(r["c2st"])
    targets = [results["target"] for results in per_seed if results.get("target")]
    return {
        "seeds": [results["config"]["seed"] for results in per_seed],
        "c2st": {name: {"per_seed": values, "mean": float(np.mean(values)), "std": float(np.std(values))}
                 for name, values in rows.items()},
        "target": {"method": " / ".join(sorted({t.get("method", NPE) for t in targets})),
                   "met_per_seed": [t["met"] for t in targets], "met": sum(t["met"] for t in targets),
                   "of": len(targets), "required": int(np.ceil(0.8 * len(targets)))} if targets else {},
    }


def seeds_table(summary: dict[str, Any]) -> str:
    """The summary of several seeds as markdown: C2ST per seed, mean and spread."""
    seeds = summary["seeds"]
    lines = ["| run | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for name, row in summary["c2st"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row["per_seed"])
                     + f" | {row['mean']:.3f} ± {row['std']:.3f} |")
    target = summary.get("target")
    if target:
        marks = ", ".join(f"seed {s}: {'met' if m else 'missed'}" for s, m in zip(seeds, target["met_per_seed"]))
        verdict = "met" if target["met"] >= target["required"] else "not met"
        lines += ["", f"C2ST (0.5 = indistinguishable from the reference). Target, {target.get('method', NPE)} "
                      "at least as close to the "
                      f"reference as TMCMC with ten times the simulations on {target['required']} of {target['of']} "
                      f"seeds: {verdict} ({target['met']} of {target['of']}; {marks})."]
    return "\n".join(lines) + "\n"
