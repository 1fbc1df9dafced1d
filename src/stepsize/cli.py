"""The ``stepsize`` command.

    stepsize list
    stepsize reproduce NAME|all [--quick] [--out DIR] [--seed N] [--force]
    stepsize bench NAME|all [--quick] [--out DIR] [--seed N] [--force]
    stepsize match G1 G2 [--method M] [--out FILE] [--force] [--max-nodes N] [--progress]

Exit status: 0 on success; 2 for a bad argument, input file or output place, with one line on
stderr; 1 for an internal error (a bug), with one line and a hint to rerun with
``--traceback``, which shows the full traceback; 130 when interrupted.

How the two kinds of errors are told apart: bad input is recognized only where it enters, at
the boundary, and raised there as :class:`UsageError` (or as ``InputError`` of the matching
command, or ``OutputError`` of :class:`stepsize.report.OutputDir`; both are ``ValueError``
subclasses converted here). The boundary is argument parsing (argparse types name the option),
the output folder or file (validated, locked, and checked for files that are not stepsize's
before any work), the reading of input files (``read_graph``'s errors are caught around that
step only) and the final writes (an ``OSError`` there names ``--out``). Everything between, the
experiment, benchmark or matcher itself, runs on validated input: any exception it raises,
``ValueError`` included, is reported as an internal error.

Output safety of ``reproduce`` and ``bench``: see :class:`stepsize.report.OutputDir` (files
that stepsize did not write are overwritten only with ``--force``; one run per folder at a time;
atomic writes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from stepsize import __version__
from stepsize._registry import BENCHMARKS, EXPERIMENTS, Entry, Registry


class UsageError(Exception):
    """A bad argument or input: exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def _integer_at_least(low: int):
    """An argparse type: an integer >= ``low`` (argparse names the option in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return parse


_seed = _integer_at_least(0)
_positive = _integer_at_least(1)


def _run_entry(entry: Entry, args: argparse.Namespace, stage, prefix: str) -> dict[str, Any]:
    """Run one entry and write its JSON and plots into the staging folder ``stage``."""
    from stepsize.report import format_table, write_json

    config = dict(entry.quick if args.quick else entry.full)
    print(f"== {prefix}{entry.name} ({'quick' if args.quick else 'full'}, seed {args.seed})",
          flush=True)
    start = time.perf_counter()
    try:
        result = entry.run(config, args.seed)
    except ImportError as exc:
        extras = ", ".join(entry.requires) or "all"
        raise UsageError(
            f"{entry.name} needs a missing package ({exc.name or exc}); "
            f"install the extras: pip install -c constraints.txt -e '.[{extras}]'"
        ) from None
    run_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        plots = list(entry.plot(result, stage))
    except OSError as exc:
        raise UsageError(f"cannot write into --out {args.out!r} ({exc.strerror or exc})") from None
    plot_s = time.perf_counter() - start
    clash = {"name", "description", "config", "seed", "quick", "version", "timings", "plots"}
    clash &= set(result)
    if clash:
        raise RuntimeError(f"{entry.name} returned reserved keys {sorted(clash)}")
    payload = {
        "name": entry.name,
        "description": entry.description,
        "config": config,
        "seed": args.seed,
        "quick": args.quick,
        "version": __version__,
        "timings": {"run_s": run_s, "plot_s": plot_s},
        "plots": [os.path.basename(p) for p in plots],
        **result,
    }
    payload.setdefault("tables", [])
    try:
        write_json(stage / f"{prefix}{entry.name}.json", payload)
    except OSError as exc:
        raise UsageError(f"cannot write into --out {args.out!r} ({exc.strerror or exc})") from None
    for tab in payload["tables"]:
        print(format_table(tab), end="\n\n")
    return payload


def _selected(registry: Registry, name: str) -> list[Entry]:
    if name == "all":
        return [registry.get(n) for n in registry.names()]
    try:
        return [registry.get(name)]
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def _cmd_list(experiments: Registry, benchmarks: Registry) -> int:
    for title, command, registry in (("experiments", "reproduce", experiments),
                                     ("benchmarks", "bench", benchmarks)):
        print(f"{title} (stepsize {command} NAME):")
        for name in registry.names():
            print(f"  {name:<14} {registry.get(name).description}")
    return 0


def _commit(folder, stage, out: str) -> list:
    try:
        return folder.commit(stage)
    except OSError as exc:
        raise UsageError(f"cannot write into --out {out!r} ({exc.strerror or exc})") from None


def _cmd_run(args: argparse.Namespace, registry: Registry, prefix: str) -> int:
    from stepsize.report import OutputDir, OutputError, write_report

    entries = _selected(registry, args.name)
    report = args.name == "all" and args.command == "reproduce"
    # Every file a run may write: its JSON and its plots, named after it by convention.
    patterns = [f"{prefix}{e.name}{end}" for e in entries for end in (".json", ".png", "_*.png")]
    try:
        with OutputDir(args.out, force=args.force) as folder:
            folder.check(patterns + (["REPORT.md"] if report else []))
            payloads = []
            for entry in entries:
                start = time.perf_counter()
                with folder.staging() as stage:
                    payloads.append(_run_entry(entry, args, stage, prefix))
                    written = _commit(folder, stage, args.out)
                print(f"wrote {folder.path / f'{prefix}{entry.name}.json'} and "
                      f"{len(written) - 1} plot(s) in {time.perf_counter() - start:.1f} s",
                      flush=True)
            if report:
                command = "stepsize reproduce all" + (" --quick" if args.quick else "")
                with folder.staging() as stage:
                    write_report(stage, payloads, command)
                    print(f"wrote {_commit(folder, stage, args.out)[0]}")
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _cmd_match(args: argparse.Namespace, memory_limit: int | None, matcher) -> int:
    try:
        from stepsize.matching._cli import InputError, cli_match
    except ImportError:
        raise UsageError("graph matching is not available in this installation") from None
    try:
        return cli_match(args, memory_limit=memory_limit, matcher=matcher)
    except InputError as exc:
        raise UsageError(str(exc)) from None


DESCRIPTION = """stepsize: the step-size parameter of iterative algorithms. Chebyshev steps,
deep-unfolded gradient descent, learned step size quantization, graph matching with adaptive
steps and the matrix perspective prox, with paper reproductions and peer benchmarks."""
EPILOG = """examples:
  stepsize list                                  experiments and benchmarks
  stepsize reproduce chebyshev --quick --out results/
  stepsize reproduce all --quick --out results/  every paper, results/REPORT.md
  stepsize bench chebyshev --quick --out results/
  stepsize match examples/g1.edgelist examples/g2.edgelist

exit status: 0 success, 2 bad arguments or input (one line on stderr), 1 internal error
(rerun with --traceback for the full traceback)"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stepsize", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"stepsize {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an internal error")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of an internal error")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("list", help="list experiments and benchmarks", parents=[common])
    for name, help_text in (("reproduce", "run a paper reproduction"),
                            ("bench", "run a side-by-side benchmark")):
        sub = commands.add_parser(name, help=help_text, parents=[common])
        sub.add_argument("name", help="registered name, or 'all'")
        sub.add_argument("--quick", action="store_true", help="the small configuration")
        sub.add_argument("--out", default="results", help="output directory (default: results)")
        sub.add_argument("--seed", type=_seed, default=0, help="random seed >= 0 (default: 0)")
        sub.add_argument("--force", action="store_true",
                         help="overwrite files in --out that stepsize did not write")

    match = commands.add_parser("match", help="match two graph files", parents=[common],
                                description="Match the nodes of two graph files (directed "
                                "GraphML and .npz graphs are matched as directed) and print or "
                                "write the correspondence as CSV.")
    match.add_argument("graph1", help="edge list ('u v [w]' or 'u' lines, '#' comments, an "
                       "optional header line), .npz adjacency or .graphml")
    match.add_argument("graph2", help="same formats")
    match.add_argument("--method", default="apfp", help="apfp (default), asm, ga, ipfp, dspfp")
    match.add_argument("--seed", type=_seed, default=0, help="random seed >= 0 (default: 0)")
    match.add_argument("--out", default=None,
                       help="CSV file for the correspondence (default: stdout)")
    match.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    match.add_argument("--max-nodes", type=_positive, default=None,
                       help="largest graph accepted (default: the largest N whose estimated "
                       "64 N^2 bytes fit in the smaller of 8 GiB and half the RAM)")
    match.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="iteration counter on stderr (default: when stderr is a terminal)")
    return parser


def main(argv: list[str] | None = None, *, experiments: Registry = EXPERIMENTS,
         benchmarks: Registry = BENCHMARKS, memory_limit: int | None = None,
         matcher=None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    The keywords are seams for embedding and tests; the command uses their defaults:
    ``experiments`` and ``benchmarks``, the registries of ``reproduce``/``bench``/``list``
    (:class:`stepsize._registry.Registry`, e.g. ``Registry(None, "experiment", [entry])``);
    ``memory_limit``, the bytes that set ``match``'s default ``--max-nodes`` (None: the smaller
    of 8 GiB and half the RAM); ``matcher``, the function ``match`` calls in place of
    :func:`stepsize.matching.match_graphs` (None: that one).
    """
    for name, registry in (("experiments", experiments), ("benchmarks", benchmarks)):
        if not isinstance(registry, Registry):
            raise TypeError(f"{name} must be a Registry, got {type(registry).__name__}")
    if memory_limit is not None:  # (the matching import only when needed: `stepsize --help`)
        from stepsize.matching._cli import check_memory_limit

        check_memory_limit(memory_limit)
    if matcher is not None and not callable(matcher):
        raise TypeError(f"matcher must be callable or None, got {type(matcher).__name__}")
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    show_traceback = "--traceback" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if args.command == "list":
            return _cmd_list(experiments, benchmarks)
        if args.command == "reproduce":
            return _cmd_run(args, experiments, "")
        if args.command == "bench":
            return _cmd_run(args, benchmarks, "bench_")
        return _cmd_match(args, memory_limit, matcher)
    except UsageError as exc:
        print(f"stepsize: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stepsize: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("stepsize: error: out of memory (for `stepsize match`, --max-nodes bounds the "
              "graph size by the memory estimate)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of stdout went away (`stepsize match ... | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked
        if show_traceback:
            raise
        message = str(exc).splitlines()[0] if str(exc) else ""
        print(f"stepsize: internal error: {type(exc).__name__}: {message} (a bug; rerun with "
              f"--traceback for the full traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
