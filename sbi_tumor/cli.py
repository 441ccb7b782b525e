"""Command-line interface: ``sbi-tumor <command> ...``.

Commands: ``simulate`` (forward model to NIfTI). Run ``sbi-tumor <command> --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .anatomy import Anatomy, AnatomyError, load_mni152, load_nifti_anatomy

__all__ = ["main"]


def add_anatomy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("anatomy")
    group.add_argument("--anatomy", default="mni152", choices=["mni152"],
                       help="the embedded default atlas (ignored when --wm/--gm/--csf are given)")
    group.add_argument("--wm", help="white-matter probability map (NIfTI)")
    group.add_argument("--gm", help="grey-matter probability map (NIfTI)")
    group.add_argument("--csf", help="CSF probability map (NIfTI)")
    group.add_argument("--resolution-mm", type=float, default=2.0,
                       help="isotropic grid spacing to simulate on (integer multiple of the input's)")
    group.add_argument("--ratio", type=float, default=10.0, help="D_white / D_grey (default 10)")


def anatomy_from_args(args: argparse.Namespace) -> Anatomy:
    maps = [args.wm, args.gm, args.csf]
    if any(maps) and not all(maps):
        raise AnatomyError("Give all three of --wm, --gm and --csf, or none (to use the MNI152 atlas).")
    if all(maps):
        return load_nifti_anatomy(args.wm, args.gm, args.csf).resample(args.resolution_mm)
    return load_mni152(args.resolution_mm)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .io import atomic_output_dir, save_nifti
    from .observation import check_thresholds, label_map
    from .solver import FKSolver, SolverConfig, seed_density

    check_thresholds(args.u_t1, args.u_t2)
    days = sorted(args.days)
    if days[0] <= 0:
        raise ValueError(f"--days must be > 0 (days after the seed), got {days}.")
    t0 = time.perf_counter()
    anatomy = anatomy_from_args(args)
    u0 = seed_density(anatomy, args.seed_mm)
    solver = FKSolver(anatomy, SolverConfig(ratio=args.ratio))
    n_steps = sum(solver.n_steps(args.dw, args.rho, days))
    density = solver.solve(args.dw, args.rho, u0, days, progress=not args.quiet and n_steps > 50)
    report = {"D_mm2_per_day": args.dw, "rho_per_day": args.rho, "u_T1": args.u_t1, "u_T2": args.u_t2,
              "seed_mm": list(args.seed_mm), "grid": list(anatomy.shape),
              "spacing_mm": anatomy.spacing.tolist(), "days": {}}
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        for day, u in zip(days, density):
            labels = label_map(u, args.u_t1, args.u_t2)
            save_nifti(Path(tmp) / f"density_day{day:g}.nii.gz", u, anatomy.affine, dtype=np.float32)
            save_nifti(Path(tmp) / f"labels_day{day:g}.nii.gz", labels, anatomy.affine, dtype=np.uint8)
            t1 = float((labels == 2).sum() * anatomy.voxel_volume)
            t2 = float((labels >= 1).sum() * anatomy.voxel_volume)
            report["days"][f"{day:g}"] = {"T1_volume_mm3": t1, "T2_volume_mm3": t2}
            print(f"day {day:g}: T1 volume {t1:.0f} mm^3, T2 volume {t2:.0f} mm^3")
        report["wall_time_s"] = time.perf_counter() - t0
        (Path(tmp) / "volumes.json").write_text(json.dumps(report, indent=2))
    print(f"wrote density_day*.nii.gz, labels_day*.nii.gz and volumes.json to {args.out} "
          f"({report['wall_time_s']:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbi-tumor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="run the forward model and write density and label maps",
                       description="Simulate tumour growth from a seed point and write, per day, the "
                                   "density and label map (0 healthy, 1 T2 only, 2 T1 core) as NIfTI.")
    p.add_argument("--dw", type=float, required=True, help="white-matter diffusivity D (mm^2/day)")
    p.add_argument("--rho", type=float, required=True, help="proliferation rate (1/day)")
    p.add_argument("--days", type=float, nargs="+", required=True, help="output days after the seed")
    p.add_argument("--seed-mm", type=float, nargs=3, required=True, metavar=("X", "Y", "Z"),
                   help="seed point in world (MNI/scanner) mm")
    p.add_argument("--u-t1", type=float, default=0.7, help="T1-gadolinium threshold (default 0.7)")
    p.add_argument("--u-t2", type=float, default=0.25, help="T2/FLAIR threshold (default 0.25)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_anatomy_arguments(p)
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # Input errors (AnatomyError, InputError, ...) are the user's to fix: no traceback.
        print(f"sbi-tumor {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
