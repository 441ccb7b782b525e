"""Command-line interface: ``sbi-tumor <command> ...``.

Commands: ``infer`` (posterior from a patient's segmentations), ``predict`` (growth forecast from a
posterior), ``demo`` (both on a synthetic patient), ``simulate`` (forward model to NIfTI). Run
``sbi-tumor <command> --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .config import EMBEDDING_NAMES, GREY_MATTER_RATIO, MAX_STEPS, METHODS, PRESETS, SEED_SIGMA_MM, SUMMARY_QUANTILES
from .arguments import COORDINATE, COUNT, DAY, FRACTION, POSITIVE, SEED, number
from .runtime import OPENMP_ENV

if TYPE_CHECKING:
    from .anatomy import Anatomy

# Only the light modules above load when the parser is built: torch, sbi, numba and nibabel load
# when a command runs, so --help and argument errors answer at once.

__all__ = ["main"]


def add_anatomy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("anatomy")
    group.add_argument("--anatomy", default="mni152", choices=["mni152"],
                       help="the embedded default atlas (ignored when --wm/--gm/--csf are given)")
    group.add_argument("--wm", help="white-matter probability map (NIfTI)")
    group.add_argument("--gm", help="grey-matter probability map (NIfTI)")
    group.add_argument("--csf", help="CSF probability map (NIfTI)")
    group.add_argument("--resolution-mm", type=POSITIVE, default=None,
                       help="isotropic grid spacing to simulate on, an integer multiple of the input's "
                            "(default: 2 for the atlas, the maps' own spacing for --wm/--gm/--csf)")
    group.add_argument("--ratio", type=number(float, 1.0, strict=False), default=GREY_MATTER_RATIO, help="D_white / D_grey")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, unless its help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):  # flags: off
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help (its commands' too) shows the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def anatomy_from_args(args: argparse.Namespace) -> Anatomy:
    from .anatomy import AnatomyError, load_mni152, load_nifti_anatomy

    maps = [args.wm, args.gm, args.csf]
    if any(maps) and not all(maps):
        raise AnatomyError("Give all three of --wm, --gm and --csf, or none (to use the MNI152 atlas).")
    if all(maps):
        anatomy = load_nifti_anatomy(args.wm, args.gm, args.csf)
        return anatomy if args.resolution_mm is None else anatomy.resample(args.resolution_mm)
    return load_mni152(2.0 if args.resolution_mm is None else args.resolution_mm)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .config import BRATS_ENHANCING, BRATS_OEDEMA
    from .io import atomic_output_dir, save_nifti
    from .observation import check_thresholds, label_map
    from .solver import FKSolver, SolverConfig, seed_density

    # the BraTS label of each of ours: 0 healthy, 1 T2 only = oedema, 2 T1 core = enhancing
    brats = np.array([0, BRATS_OEDEMA, BRATS_ENHANCING[0]], dtype=np.uint8)
    check_thresholds(args.u_t1, args.u_t2)
    days = sorted(args.days)
    if days[0] <= 0:
        raise ValueError(f"--days must be > 0 (days after the seed), got {days}.")
    t0 = time.perf_counter()
    anatomy = anatomy_from_args(args)
    u0 = seed_density(anatomy, args.seed_mm, sigma_mm=args.seed_sigma_mm)
    solver = FKSolver(anatomy, SolverConfig(ratio=args.ratio))
    n_steps = sum(solver.n_steps(args.dw, args.rho, days))
    if n_steps > args.max_steps:
        raise ValueError(f"--dw {args.dw:g} --rho {args.rho:g} up to day {days[-1]:g} needs {n_steps:,} time steps on "
                         f"this grid, more than --max-steps {args.max_steps:,} (D and rho are in mm^2/day and "
                         "1/day); check the units, or pass a larger --max-steps to run it anyway.")
    density = solver.solve(args.dw, args.rho, u0, days, progress=not args.quiet and n_steps > 50)
    report = {"D_mm2_per_day": args.dw, "rho_per_day": args.rho, "u_T1": args.u_t1, "u_T2": args.u_t2,
              "seed_mm": list(args.seed_mm), "seed_sigma_mm": args.seed_sigma_mm, "grid": list(anatomy.shape),
              "spacing_mm": anatomy.spacing.tolist(), "days": {}}
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        for day, u in zip(days, density):
            labels = label_map(u, args.u_t1, args.u_t2)
            save_nifti(Path(tmp) / f"density_day{day:g}.nii.gz", u, anatomy.affine, dtype=np.float32)
            save_nifti(Path(tmp) / f"labels_day{day:g}.nii.gz", labels, anatomy.affine, dtype=np.uint8)
            save_nifti(Path(tmp) / f"brats_day{day:g}.nii.gz", brats[labels], anatomy.affine, dtype=np.uint8)
            t1 = float((labels == 2).sum() * anatomy.voxel_volume) / 1e3
            t2 = float((labels >= 1).sum() * anatomy.voxel_volume) / 1e3
            report["days"][f"{day:g}"] = {"T1_volume_ml": t1, "T2_volume_ml": t2}
            print(f"day {day:g}: T1 volume {t1:.2f} mL, T2 volume {t2:.2f} mL")
        report["wall_time_s"] = time.perf_counter() - t0
        (Path(tmp) / "volumes.json").write_text(json.dumps(report, indent=2))
    print(f"wrote density_day*.nii.gz, labels_day*.nii.gz (0 healthy, 1 T2 only, 2 T1 core), brats_day*.nii.gz "
          f"(the same in BraTS labels: 2 oedema, 4 enhancing; for infer --seg) and volumes.json to {args.out} "
          f"({report['wall_time_s']:.1f} s)")
    return 0


def _inference_config(args: argparse.Namespace):
    from .config import InferenceConfig

    if args.log_space and args.method == "NPE_A":
        raise ValueError("--log-space works with --method NPE_B, NPE_C or TSNPE: NPE_A's analytic correction "
                         "needs a prior that is uniform in (log D, log rho), and the presets are uniform in (D, rho).")
    return InferenceConfig(method=args.method, num_rounds=args.rounds, num_simulations=args.simulations,
                           embedding=args.embedding, max_num_epochs=args.max_epochs, seed=args.seed,
                           embedding_kwargs={"hidden": args.mlp_hidden} if args.embedding == "mlp" else {},
                           num_workers=args.workers, client=args.scheduler, log_space=args.log_space,
                           augment=args.augment, density_estimator=args.density_estimator,
                           num_components=args.components, ensemble_size=args.ensemble,
                           calibration_solves=args.calibration_solves, unconstrained=args.unconstrained)


def _segmentations(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(t1, t2)`` for ``load_patient``: two binary masks, or a label map and None."""
    if args.seg is not None:
        if args.t1 is not None or args.t2 is not None:
            raise ValueError("Give --seg (a label map) or --t1 and --t2 (binary masks), not both.")
        return args.seg, None
    if args.t1 is None or args.t2 is None:
        raise ValueError("Give the segmentations: --t1 T1.nii.gz --t2 T2.nii.gz (binary masks), or --seg SEG.nii.gz "
                         "(a BraTS label map).")
    return args.t1, args.t2


def cmd_infer(args: argparse.Namespace) -> int:
    from .patient.workflow import infer_patient

    t0 = time.perf_counter()
    config, segmentations = _inference_config(args), _segmentations(args)  # options first
    try:
        run = infer_patient(*segmentations, args.day, adc=args.adc, t2_initial=args.t2_initial,
                            seed_mm=args.seed_mm, anatomy=anatomy_from_args(args), prior=args.prior,
                            config=config, ratio=args.ratio, out_dir=args.out,
                            resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\nInterrupted. The finished simulations are kept; continue with the same command "
              "and --resume.", file=sys.stderr)
        return 130
    print(_summary_table(run.result))
    _print_files(args.out, run.files, time.perf_counter() - t0)
    return 0


def _summary_table(result) -> str:
    from .config import parameter_names

    q = np.quantile(result.samples.numpy(), SUMMARY_QUANTILES, axis=0)
    lines = [f"{'':6s} {'MAP':>9s} {'median':>9s} {'90% interval':>22s}"]
    lines += [f"{name:6s} {result.map[i]:9.3g} {q[1, i]:9.3g}   [{q[0, i]:8.3g}, {q[2, i]:8.3g}]"
              for i, name in enumerate(parameter_names(result.samples.shape[1]))]
    return "\n".join(lines)


def _print_files(directory, files: dict[str, str], seconds: float) -> None:
    print(f"Wrote to {directory} in {seconds:.0f} s:")
    for what, name in files.items():
        print(f"  {name:32s} {what}")


def _day_files(pairs: list[str] | None, option: str) -> dict[float, str]:
    """``["14=a.nii.gz", ...]`` -> ``{14.0: "a.nii.gz"}``."""
    out = {}
    for pair in pairs or []:
        day, sep, path = pair.partition("=")
        try:
            out[float(day)] = path
        except ValueError:
            sep = ""
        if not sep or not path:
            raise ValueError(f"{option} takes DAY=FILE (e.g. 14=t2_day14.nii.gz), got {pair!r}.")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from .patient.prediction import predict, save_prediction
    from .patient.run import load_run

    t0 = time.perf_counter()
    run = load_run(args.posterior)
    prediction = predict(run, args.days, num_samples=args.samples,
                         observed_t2=_day_files(args.t2_observed, "--t2-observed"),
                         observed_t1=_day_files(args.t1_observed, "--t1-observed"),
                         seed=args.seed, progress=not args.quiet)
    files = save_prediction(prediction, run, args.out, overwrite=args.overwrite)
    print(_volume_table(prediction))
    _print_files(args.out, files, time.perf_counter() - t0)
    return 0


def _volume_table(prediction) -> str:
    lines = [f"{'day':>6s} {'T1 [mL]':>15s} {'T2 [mL]':>15s} {'T2 observed':>12s} {'Dice T2':>8s} "
             f"{'T1 observed':>12s} {'Dice T1':>8s}"]
    for row in prediction.table():
        obs = row.get("T2_observed_mm3")
        lines.append(f"{row['day']:6g} {row['T1_mean_mm3'] / 1e3:7.2f} ± {row['T1_std_mm3'] / 1e3:5.2f} "
                     f"{row['T2_mean_mm3'] / 1e3:7.2f} ± {row['T2_std_mm3'] / 1e3:5.2f} "
                     + (f"{'':12s} {'':8s}" if obs is None else f"{obs / 1e3:12.2f} {row['T2_dice_map']:8.3f}")
                     + ("" if row.get("T1_observed_mm3") is None else
                        f" {row['T1_observed_mm3'] / 1e3:12.2f} {row['T1_dice_map']:8.3f}"))
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from .io import mark_output
    from .patient.prediction import predict, save_prediction
    from .patient.synthetic import make_synthetic_patient
    from .patient.workflow import infer_patient

    config = _inference_config(args)  # every option checked before anything is written or removed
    out = Path(args.out)
    if out.exists():  # main() checked that --overwrite was given and that it is an output of ours
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mark_output(out)  # an interrupted demo's folder is still known for ours
    progress = not args.quiet
    timings = {}
    t0 = time.perf_counter()
    print("1/3 Making a synthetic patient on the MNI152 atlas (2 mm) ...", flush=True)
    patient = make_synthetic_patient(out / "inputs")
    timings["synthetic patient"] = time.perf_counter() - t0

    t = time.perf_counter()
    print(f"2/3 Inferring (D, rho, u_T1, u_T2) from the segmentations {patient.day:g} days after the "
          f"ADC scan: {args.rounds} rounds x {args.simulations} simulations ...", flush=True)
    command = (f"sbi-tumor infer --t1 {patient.t1} --t2 {patient.t2} --day {patient.day:g} "
               f"--adc {patient.adc} --t2-initial {patient.t2_initial} --prior paper "
               f"--method {args.method} --rounds {args.rounds} --simulations {args.simulations} "
               f"--embedding {args.embedding} --out {out / 'posterior'}")
    print(f"    (the same as: {command})", flush=True)
    run = infer_patient(patient.t1, patient.t2, patient.day, adc=patient.adc,
                        t2_initial=patient.t2_initial, prior="paper", config=config,
                        out_dir=out / "posterior", progress=progress, truth=patient.truth)
    timings["inference"] = time.perf_counter() - t
    print(_summary_table(run.result))
    print(f"    truth: {', '.join(f'{v:g}' for v in patient.truth)}")

    t = time.perf_counter()
    days = [patient.day, patient.later_day, patient.later_day + 2]
    print(f"3/3 Predicting days {', '.join(f'{d:g}' for d in days)} with {args.samples} posterior "
          f"samples; day {patient.later_day:g} is compared with the third scan ...", flush=True)
    prediction = predict(run, days, num_samples=args.samples, seed=args.seed, progress=progress,
                         observed_t2={patient.later_day: patient.t2_later},
                         observed_t1={patient.later_day: patient.t1_later})
    save_prediction(prediction, run, out / "prediction")
    timings["prediction"] = time.perf_counter() - t
    print(_volume_table(prediction))

    print(f"\nDone in {time.perf_counter() - t0:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}). Outputs:")
    for name, what in (
            ("inputs", "synthetic scans (NIfTI) and truth.json"),
            ("posterior", "samples.csv, map.csv, posterior.pt, pairplot.png, slices.png, report.md"),
            ("prediction", "MAP density/labels and infiltration maps (NIfTI), volumes.csv, volumes.png, "
                           "slices.png, infiltration.png, report.md")):
        print(f"  {out / name}/  {what}")
    return 0


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The inference options; their defaults are ``InferenceConfig()``'s, the measured best."""
    from .config import DEFAULT_AUGMENT, DEFAULT_COMPONENTS, DENSITY_ESTIMATORS, InferenceConfig

    defaults = InferenceConfig()
    group = parser.add_argument_group("inference")
    group.add_argument("--method", default=defaults.method, choices=METHODS,
                       help="sequential NPE variant (TSNPE: truncated proposals; NPE_B: the paper's)")
    group.add_argument("--rounds", type=COUNT, default=defaults.num_rounds, help="rounds")
    group.add_argument("--simulations", type=number(int, 10, strict=False, what=" (sbi keeps 10% for validation)"), default=defaults.num_simulations,
                       help="forward solves per round")
    group.add_argument("--embedding", default=defaults.embedding, choices=sorted(EMBEDDING_NAMES),
                       help="embedding net of the label maps")
    group.add_argument("--density-estimator", default=defaults.density_estimator, choices=DENSITY_ESTIMATORS,
                       help="sbi's density estimator: mdn (Gaussian mixture), nsf or maf (normalising flows: "
                            "better calibrated, about 3x the training time), fmpe (flow matching, with --rounds 1 only); "
                            "NPE_A needs mdn")
    group.add_argument("--components", type=COUNT, default=None,
                       help=f"mixture components of the mdn (default {DEFAULT_COMPONENTS}; 1 with NPE_A)")
    group.add_argument("--ensemble", type=number(int, 1, high=21, strict=False), default=defaults.ensemble_size,
                       help="density estimators trained on the same simulations and averaged (not with NPE_A); "
                            "the training time grows with it")
    group.add_argument("--mlp-hidden", type=COUNT, default=100,
                       help="tanh units of the mlp embedding (default 100, the paper's)")
    group.add_argument("--log-space", action="store_true",
                       help="train on (log D, log rho, u_T1, u_T2), where the posterior ridge at a fixed "
                            "front speed is straight (not with NPE_A)")
    group.add_argument("--unconstrained", action="store_true",
                       help="the mdn learns theta in the logit of the prior's box, so none of its mass falls "
                            "outside the prior: with --rounds 1 its intervals hold what they claim (SBC and "
                            "coverage on held-out prior draws), but after several rounds it is no better "
                            "calibrated than the default and wider (mdn with TSNPE or NPE_B, or one round of "
                            "NPE_C; not with one scan)")
    group.add_argument("--augment", type=number(int, 0, high=1001), default=None,
                       help="with --method TSNPE: training pairs per solve, each solve observed with this "
                            f"many threshold pairs (default {DEFAULT_AUGMENT} with TSNPE, 1 otherwise)")
    group.add_argument("--calibration-solves", type=number(int, 0, strict=False, high=100_001), default=defaults.calibration_solves,
                       help="solves after the last round, not trained on, that widen the posterior until its "
                            f"90%% intervals cover their truths (split conformal; default {defaults.calibration_solves}, "
                            "0: the network's posterior as it is; TSNPE, or one round of any method)")
    group.add_argument("--max-epochs", type=COUNT, default=defaults.max_num_epochs,
                       help="most training epochs per round")
    group.add_argument("--random-seed", dest="seed", type=SEED, default=0,
                       help="seed of every random draw: the same seed gives the same result (default 0)")
    group.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run each round's simulations on this Dask cluster")
    group.add_argument("--workers", type=number(int, 0, high=(os.cpu_count() or 1) + 1, what=" (the cores here)"), default=1,
                       help="local simulation processes (default 1: the numba kernel already uses "
                            "all cores, which measured faster than processes on 2 cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sbi-tumor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)  # commands are _Parsers too

    p = sub.add_parser("simulate", help="run the forward model and write density and label maps",
                       description="Simulate tumour growth from a seed point and write, per day, the "
                                   "density and label map (0 healthy, 1 T2 only, 2 T1 core) as NIfTI.")
    p.add_argument("--dw", type=POSITIVE, required=True, help="white-matter diffusivity D (mm^2/day)")
    p.add_argument("--rho", type=POSITIVE, required=True, help="proliferation rate (1/day)")
    p.add_argument("--days", type=DAY, nargs="+", required=True, help="output days after the seed")
    p.add_argument("--seed-mm", type=COORDINATE, nargs=3, required=True, metavar=("X", "Y", "Z"),
                   help="seed point in world (MNI/scanner) mm")
    p.add_argument("--seed-sigma-mm", type=number(float, 0.1, high=50.0, what=" mm"), default=SEED_SIGMA_MM,
                   help="width of the seed: a Gaussian of this standard deviation (mm) and peak density 1, "
                        "the same tumour on every grid at least this fine")
    p.add_argument("--max-steps", type=COUNT, default=MAX_STEPS,
                   help="refuse runs that need more time steps than this")
    p.add_argument("--u-t1", type=FRACTION, default=0.7, help="T1-gadolinium threshold (default 0.7)")
    p.add_argument("--u-t2", type=FRACTION, default=0.25, help="T2/FLAIR threshold (default 0.25)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_anatomy_arguments(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "infer", help="posterior of the tumour model from a patient's segmentations",
        description="Fit the tumour model to T1-gadolinium and T2/FLAIR segmentations. The initial "
                    "condition is a seed point (--seed-mm; DAY = days since the seed), the ADC map of "
                    "a first scan (--adc; DAY = days from that scan to the segmentations), with cell "
                    "density inversely proportional to ADC inside that scan's T2 segmentation "
                    "(--t2-initial), or, with neither, unknown: one scan, from which the posterior is over "
                    "what it determines, the origin (x, y, z), ell = sqrt(D/rho) and tau = rho T (DAY, if "
                    "given, is the tumour's age and gives D and rho), with infiltration maps and two "
                    "radiotherapy targets. Writes posterior samples, MAP, the posterior, plots and a report.")
    seg = p.add_argument_group("segmentations (--t1 and --t2, or --seg)")
    seg.add_argument("--t1", help="binary T1-gadolinium (core) segmentation, NIfTI; may be empty (no enhancing core)")
    seg.add_argument("--t2", help="binary T2/FLAIR segmentation, NIfTI")
    seg.add_argument("--seg", help="a label map instead of --t1/--t2, read by --labels")
    seg.add_argument("--labels", choices=["brats"], default="brats",
                     help="labels of --seg: brats = 1 necrosis, 2 oedema, 4 (or 3 since 2023) enhancing; "
                          "T1 core = enhancing + necrosis, T2 extent = all three")
    p.add_argument("--day", type=DAY, help="days from the initial condition to --t1/--t2 (needed with --adc "
                                           "or --seed-mm; without them, the tumour's age if known)")
    initial = p.add_mutually_exclusive_group()
    initial.add_argument("--adc", help="ADC map of the first scan (the initial condition)")
    initial.add_argument("--seed-mm", type=COORDINATE, nargs=3, metavar=("X", "Y", "Z"),
                         help="seed point of the tumour in world (scanner/MNI) mm")
    p.add_argument("--t2-initial", help="T2 segmentation of the ADC scan (where ADC gives the density; "
                                        "default --t2)")
    p.add_argument("--prior", default="human", choices=sorted(PRESETS),
                   help="prior box: human glioma ranges (default) or the paper's synthetic ranges; with one scan "
                        "(no --seed-mm/--adc) only its threshold box, the origin, ell and tau having their own prior")
    p.add_argument("--out", required=True, help="output directory (written complete or not at all)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (its simulations are in OUT.partial)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_anatomy_arguments(p)
    add_inference_arguments(p)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser(
        "predict", help="forecast growth from a posterior: MAP maps, volumes with uncertainty, Dice",
        description="Simulate the MAP and posterior samples of an infer run forward. Days count from "
                    "the initial condition, as in infer.")
    p.add_argument("--posterior", required=True, help="output directory of sbi-tumor infer")
    p.add_argument("--days", type=DAY, nargs="+", help="days to predict (default: the fitted scan; one scan "
                                                     "of unknown age predicts only that)")
    p.add_argument("--samples", type=number(int, 0, high=100_001), default=100,
                   help="posterior samples to simulate (default 100)")
    p.add_argument("--t2-observed", nargs="+", metavar="DAY=FILE",
                   help="later T2 segmentations to compare with (volume and Dice)")
    p.add_argument("--t1-observed", nargs="+", metavar="DAY=FILE",
                   help="later T1 segmentations to compare with")
    p.add_argument("--random-seed", dest="seed", type=SEED, default=0, help="seed of the posterior samples")
    p.add_argument("--out", required=True, help="output directory (written complete or not at all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "demo", help="make a synthetic patient, then infer and predict (a few minutes)",
        description="Grow a tumour with known parameters on the MNI152 atlas, write its scans (ADC-like "
                    "map and segmentations at three time points) as NIfTI, infer the parameters from "
                    "the second scan and predict the third.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--samples", type=number(int, 0, high=100_001), default=50,
                   help="posterior samples to predict with (default 50)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_inference_arguments(p)  # the defaults of infer: the demo shows what a user gets
    p.set_defaults(func=cmd_demo)

    from .benchmark.cli import add_benchmark_parser

    add_benchmark_parser(sub)
    return parser


def _check_output(args: argparse.Namespace) -> None:
    """Before any work: ``--out`` can be written, and exists only with ``--overwrite`` (or
    ``--resume``'s work area exists)."""
    out = Path(args.out)
    resumable = getattr(args, "seeds", None)  # a sweep over seeds keeps its finished seeds in --out
    if out.exists() and not getattr(args, "overwrite", False) and not resumable:
        raise FileExistsError(f"--out {out} already exists; choose another directory or pass --overwrite.")
    posterior = getattr(args, "posterior", None)
    if posterior is not None and out.resolve() == Path(posterior).resolve():
        raise ValueError(f"--out {out} is the --posterior directory; write the prediction elsewhere.")
    if getattr(args, "overwrite", False):
        from .io import check_replaceable

        check_replaceable(out)
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    try:  # permissions alone do not tell (root, read-only and virtual file systems): try it
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".sbi-tumor-check-"))
    except OSError:
        raise ValueError(f"--out {out}: cannot create it, {parent} is not a writable directory; choose another "
                         "--out.") from None
    work = out.with_name(out.name + ".partial")
    if hasattr(args, "resume") and work.exists() and not args.resume:
        raise FileExistsError(f"An interrupted run left its simulations in {work}; continue it with --resume, or "
                              f"delete {work} to start afresh.")
    if getattr(args, "resume", False) and not work.exists():
        raise ValueError(f"--resume: there is no interrupted run to continue ({out.name}.partial is missing "
                         f"next to --out {out}); drop --resume to start afresh.")


def _check_scheduler(address: str | None, timeout_s: float = 3.0) -> None:
    """Before any work: the Dask scheduler at ``tcp://HOST:PORT`` accepts connections."""
    import socket
    from urllib.parse import urlparse

    if address is None:
        return
    url = urlparse(address)
    try:
        port = url.port
    except ValueError:  # a port out of 0-65535
        port = None
    if url.scheme != "tcp" or not url.hostname or not port:
        raise ValueError(f"--scheduler {address}: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786).")
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as err:
        raise ValueError(f"--scheduler: cannot reach the Dask scheduler at {address} ({err.strerror or err}); "
                         "start one with `dask scheduler`, or drop --scheduler to simulate here.") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in OPENMP_ENV.items():  # before torch and numba load (sbi_tumor.runtime)
        os.environ.setdefault(key, value)

    def show(message, category, filename, lineno, file=None, line=None):
        # Warnings here are notes for the user (e.g. "resampled"), not for a developer.
        print(f"sbi-tumor {args.command}: warning: {message}", file=sys.stderr)

    try:
        if hasattr(args, "out"):
            _check_output(args)
        _check_scheduler(getattr(args, "scheduler", None))
        with warnings.catch_warnings():  # restores showwarning for Python callers of main()
            warnings.showwarning = show
            return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # Input errors (AnatomyError, InputError, ...) are the user's to fix: no traceback.
        print(f"sbi-tumor {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        # A run that cannot go on (sbi_compat.InferenceError) says what to change: no traceback
        # either. Looked up, not imported: the module loads torch, and it is loaded if it raised.
        compat = sys.modules.get(f"{__package__}.sbi_compat")
        if compat is None or not isinstance(err, compat.InferenceError):
            raise
        print(f"sbi-tumor {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
