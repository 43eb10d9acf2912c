"""Command line: ``onnxprune MODEL [options]``. A thin layer over :func:`onnxprune.prune`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import onnxruntime as ort

from onnxprune.calibdata import add_calibration_arguments, image_options_from_args
from onnxprune.config import DEFAULT_RATIO, DEFAULT_REFIT_PASSES, DEFAULT_ROUND_TO, Importance, PruneConfig
from onnxprune.errors import InputError, OnnxPruneError
from onnxprune.model import save_model_atomic, write_text_atomic
from onnxprune.pipeline import find_groups, prune
from onnxprune.report import format_groups, format_summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other bad input
        self.exit(2, f"onnxprune: error: {message} (see onnxprune --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxprune", description="Remove the least important channels of an ONNX model.")
    parser.add_argument("model", help="the .onnx model to prune (never modified)")
    parser.add_argument("-o", "--output", help="where to write the pruned model (default: MODEL_STEM.pruned.onnx beside it)")
    parser.add_argument("--ratio", type=float, default=DEFAULT_RATIO, help=f"fraction of channels removed per group (default {DEFAULT_RATIO})")
    parser.add_argument("--importance", choices=[i.value for i in Importance], default=Importance.L1.value,
                        help="how channels are ranked: weight norms l1 (default), l2, bn (BatchNorm |gamma|); "
                             "activations on --calib data: activation, apoz, fluctuation, wanda, redundancy")
    parser.add_argument("--no-compensate", action="store_true",
                        help="do not adjust the remaining weights on calibration data after removing channels")
    parser.add_argument("--refit-passes", type=int, default=None, metavar="N",
                        help="compensation refits on the pruned model in at most N passes over the calibration "
                             "data (default: one per consumer depth on small models, at least "
                             f"{DEFAULT_REFIT_PASSES}; more can be more faithful on deep models; 0: none)")
    parser.add_argument("--round-to", type=int, default=None, metavar="N",
                        help=f"keep channel counts a multiple of N (default {DEFAULT_ROUND_TO})")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="NAME", help="node names or globs whose groups stay whole")
    parser.add_argument("--dry-run", action="store_true", help="print the channel groups and the plan; write nothing")
    parser.add_argument("--report", metavar="PATH", help="write the JSON report here")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random validation inputs")
    add_calibration_arguments(parser)
    search = parser.add_argument_group("targets and guards")
    search.add_argument("--global", dest="global_ranking", action="store_true",
                        help="rank all groups together (per-group ratios differ; at most --group-cap of a group goes)")
    search.add_argument("--group-cap", type=float, default=None, metavar="F", help="largest share of one group removed by global ranking (default 0.8)")
    search.add_argument("--target-macs", type=float, metavar="F", help="keep this fraction of the MACs (global ranking)")
    search.add_argument("--target-latency", type=float, metavar="F", help="keep this fraction of the measured latency")
    search.add_argument("--max-drop", type=float, metavar="X",
                        help="largest acceptable loss: accuracy points with labels, else top-1 agreement points, else relative output error")
    search.add_argument("--sensitivity", action="store_true", help="allocate per-group ratios from a per-group error scan")
    search.add_argument("--iterative", type=int, metavar="K", help="reach the target in K prune-and-check steps")
    runtime = parser.add_argument_group("measurement")
    runtime.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    runtime.add_argument("--providers", nargs="+", metavar="EP", help="ONNX Runtime execution providers (default CPU)")
    runtime.add_argument("--threads", type=int, default=1, help="intra-op threads for latency (default 1)")
    runtime.add_argument("--batch", type=int, default=1, help="batch size for latency (default 1)")
    runtime.add_argument("--html", metavar="PATH", help="write a self-contained HTML report")
    runtime.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no summary")
    return parser


def _output_path(model: Path, output: str | None, force: bool) -> Path:
    path = Path(output) if output else model.with_name(f"{model.stem}.pruned.onnx")
    if path.exists() and model.exists() and os.path.samefile(path, model):
        raise InputError(f"the output '{path}' is the input model; choose another path with -o")
    if path.is_dir():
        raise InputError(f"the output '{path}' is a directory; give a file path with -o")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write to the folder '{path.parent}'; choose a writable location with -o")
    if path.exists() and not force:
        raise InputError(f"the output '{path}' already exists; pass --force to replace it")
    return path


def _check_writable(path: Path) -> None:
    if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write '{path}'; choose a file in a writable folder")


def run(args: argparse.Namespace) -> int:
    config = PruneConfig(
        ratio=args.ratio, importance=Importance(args.importance), round_to=args.round_to, exclude=tuple(args.exclude),
        seed=args.seed, global_ranking=args.global_ranking, target_macs=args.target_macs,
        target_latency=args.target_latency, max_drop=args.max_drop, sensitivity=args.sensitivity,
        iterative=args.iterative, latency=not args.no_latency, providers=tuple(args.providers) if args.providers else None,
        threads=args.threads, batch=args.batch, quiet=args.quiet, compensate=not args.no_compensate,
        refit_passes=args.refit_passes,
        calib=args.calib, calib_samples=args.calib_samples, calib_batch=args.calib_batch, held_out=args.held_out,
        images=image_options_from_args(args),
        **({"group_cap": args.group_cap} if args.group_cap is not None else {}),
    )
    model = Path(args.model)
    if args.dry_run:
        result = find_groups(model, config)
        print(format_groups(result.groups))
        for note in result.notes:
            print(f"note: {note}")
        if result.why_nothing:
            print(f"nothing can be pruned: {result.why_nothing}")
        return 0
    output = _output_path(model, args.output, args.force)
    for extra in (args.report, args.html):
        if extra:
            _check_writable(Path(extra))
    with warnings.catch_warnings():
        # The API warns with each "warning: " note; the command line prints those notes itself, once, below.
        warnings.filterwarnings("ignore", category=UserWarning, module="onnxprune")
        result = prune(model, config)
    for note in result.notes:
        if note.startswith("warning: "):
            print(f"onnxprune: {note}", file=sys.stderr)
    if result.report["pruned"]["params"] == result.report["original"]["params"]:
        print("nothing was pruned: " + _why_nothing(result.report["groups"], result.notes))
        return 0
    save_model_atomic(result.model, output, external_data=result.external_data)
    if args.report:
        write_text_atomic(Path(args.report), json.dumps(result.report, indent=2))
    if args.html:
        from onnxprune.html_report import render_html  # noqa: PLC0415 - only --html needs it

        write_text_atomic(Path(args.html), render_html(result.report))
    if not args.quiet:
        print(format_summary(result.report, str(output)))
    return 0


def _why_nothing(groups: list[dict], notes: list[str]) -> str:
    said = [note.removeprefix("nothing can be pruned: ") for note in notes if note.startswith("nothing can be pruned: ")]
    if said:
        return f"{said[0]}; no file was written"
    if all(g["pinned_reason"] for g in groups):
        return "every channel group is pinned (run with --dry-run to see why); no file was written"
    return "the ratio and rounding leave every group whole (try a larger --ratio or a smaller --round-to); no file was written"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``onnxprune`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (status 2) and --help (status 0)
        return int(exc.code or 0)
    # ONNX Runtime's graph optimisers log their own warnings (an Unsqueeze they cannot remove, say) through
    # the process-wide logger, which session options do not reach; they mean nothing to a user here.
    ort.set_default_logger_severity(3)
    try:
        return run(args)
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onnxprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a pipeline step never prints a traceback unless asked
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        print(f"onnxprune: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(nothing was written; rerun with ONNXPRUNE_DEBUG=1 for details and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
