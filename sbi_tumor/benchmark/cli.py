"""``sbi-tumor benchmark npe-vs-mcmc``: the benchmark as a command."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..arguments import COUNT, SEED, json_object, number
from ..config import EMBEDDING_NAMES, METHODS
from .config import CASE_SEEDS_MM, BenchmarkConfig

__all__ = ["add_benchmark_parser", "main"]


def add_benchmark_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``benchmark npe-vs-mcmc`` on the ``sbi-tumor`` subcommand parsers."""
    parser = subparsers.add_parser("benchmark", help="compare inference methods on synthetic cases")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    defaults = BenchmarkConfig()
    p = sub.add_parser(
        "npe-vs-mcmc", help="sequential NPE against TMCMC on the same case and prior",
        description=__doc__.split("\n\n")[0] + " Writes results.json, table.md, samples.npz and plots.")
    p.add_argument("--case", default="paper", choices=sorted(CASE_SEEDS_MM), help="synthetic case")
    p.add_argument("--budgets", type=COUNT, nargs="+",
                   help=f"forward-simulation budgets of both methods (default {' '.join(map(str, defaults.budgets))})")
    p.add_argument("--tmcmc-factor", type=number(int, 0, strict=False),
                   help=f"also run TMCMC at this many times the largest budget; 0: no (default {defaults.tmcmc_factor})")
    p.add_argument("--method", choices=METHODS,
                   help=f"sequential NPE variant (default {defaults.npe_method})")
    p.add_argument("--rounds", type=COUNT, help=f"NPE rounds (default {defaults.npe_rounds})")
    p.add_argument("--log-space", action="store_true", help="train NPE on (log D, log rho, u_T1, u_T2)")
    p.add_argument("--augment", type=COUNT,
                   help="NPE training pairs per forward solve, with redrawn thresholds and masks (TSNPE only)")
    p.add_argument("--refine-solves", type=COUNT, nargs="+", metavar="N",
                   help="refine NPE's posterior with the likelihood TMCMC samples: N solves per iteration of "
                        "adaptive importance sampling, taken from each budget (e.g. 100 100 100 100 100; default: NPE alone)")
    p.add_argument("--embedding", choices=sorted(EMBEDDING_NAMES), help=f"NPE embedding net (default {defaults.embedding})")
    p.add_argument("--embedding-kwargs", type=json_object, metavar="JSON",
                   help='extra arguments of the embedding net, e.g. \'{"octants": true}\'')
    p.add_argument("--reference-samples", type=COUNT,
                   help=f"population of the reference TMCMC run (default {defaults.reference_samples})")
    p.add_argument("--threads", type=COUNT, help=f"numba and torch threads (default {defaults.threads})")
    p.add_argument("--random-seed", "--seed", dest="seed", type=SEED, default=0,
                   help="seed of the whole benchmark (default 0)")
    p.add_argument("--random-seeds", "--seeds", dest="seeds", type=SEED, nargs="+", metavar="SEED",
                   help="run once per seed into OUT/seed<SEED> (a rerun skips finished seeds) and write "
                        "summary.json and summary.md across them; replaces --random-seed")
    p.add_argument("--quick", action="store_true", help="a small version that runs in about a minute")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_npe_vs_mcmc)


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    options = {"case": args.case, "seed": args.seed, "budgets": args.budgets, "tmcmc_factor": args.tmcmc_factor,
               "npe_method": args.method, "npe_rounds": args.rounds, "embedding": args.embedding,
               "embedding_kwargs": args.embedding_kwargs,
               "npe_log_space": args.log_space or None, "npe_augment": args.augment,
               "refine_solves": args.refine_solves,
               "reference_samples": args.reference_samples, "threads": args.threads}
    options = {k: v for k, v in options.items() if v is not None}
    return BenchmarkConfig.quick(**options) if args.quick else BenchmarkConfig(**options)


def command_line(args: argparse.Namespace) -> str:
    """The ``sbi-tumor`` command that reproduces ``args`` (recorded with the results)."""
    words = ["sbi-tumor benchmark npe-vs-mcmc", f"--case {args.case}"]
    if args.quick:
        words.append("--quick")
    if args.budgets:
        words.append("--budgets " + " ".join(map(str, args.budgets)))
    for flag in ("tmcmc_factor", "method", "rounds", "augment", "embedding", "reference_samples", "threads"):
        if getattr(args, flag) is not None:
            words.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    if args.refine_solves:
        words.append("--refine-solves " + " ".join(map(str, args.refine_solves)))
    if args.embedding_kwargs is not None:
        words.append("--embedding-kwargs " + shlex.quote(json.dumps(args.embedding_kwargs)))
    if args.log_space:
        words.append("--log-space")
    seeds = getattr(args, "seeds", None)
    words += [("--random-seeds " + " ".join(map(str, seeds))) if seeds else f"--random-seed {args.seed}",
              f"--out {args.out}"]
    return " ".join(words)


def cmd_npe_vs_mcmc(args: argparse.Namespace) -> int:
    from ..io import atomic_output_dir
    from .report import markdown_table, write_outputs
    from .runners import run_npe_vs_mcmc

    if args.seeds:
        return _run_seeds(args)
    config = config_from_args(args)
    command = command_line(args)
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        results, samples = run_npe_vs_mcmc(config, log=lambda m: print(m, file=sys.stderr, flush=True))
        results["command"] = command
        write_outputs(Path(tmp), results, samples, command)
    print(markdown_table(results))
    print(f"wrote results.json, table.md, samples.npz and plots to {args.out} "
          f"({results['total_wall_time_s']:.0f} s)")
    return 0


def _run_seeds(args: argparse.Namespace) -> int:
    """One benchmark per seed in ``OUT/seed<k>`` (finished seeds are kept), then the summary."""

    from .report import seeds_summary, seeds_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in args.seeds:
        seed_args = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None, "out": str(out / f"seed{seed}")})
        path = Path(seed_args.out) / "results.json"
        if not path.exists():
            print(f"seed {seed}:", file=sys.stderr, flush=True)
            cmd_npe_vs_mcmc(seed_args)
        per_seed.append(json.loads(path.read_text()))
    summary = seeds_summary(per_seed)
    summary["command"] = command_line(args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(seeds_table(summary))
    print(seeds_table(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``benchmark npe-vs-mcmc`` without the rest of the ``sbi-tumor`` CLI (``argv`` after it)."""
    parser = argparse.ArgumentParser(prog="sbi-tumor")
    add_benchmark_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["benchmark", "npe-vs-mcmc", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
