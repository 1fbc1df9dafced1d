"""The ``stepsize`` command.

    stepsize list
    stepsize reproduce NAME|all [--quick] [--out DIR] [--seed N]
    stepsize bench NAME|all [--quick] [--out DIR] [--seed N]
    stepsize match G1 G2 [--method M] [--out FILE]

Bad arguments or inputs exit with status 2 and one line on stderr; an unexpected failure exits
with status 1 and one line (``--traceback`` shows the full traceback for debugging).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stepsize import __version__
from stepsize._registry import BENCHMARKS, EXPERIMENTS, Entry, Registry


class UsageError(Exception):
    """A bad argument or input: exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def _output_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"--out {path!r} is not a writable directory ({exc.strerror})") from None
    return out


def _run_entry(entry: Entry, args: argparse.Namespace, out: Path, prefix: str) -> dict[str, Any]:
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
    plots = [Path(p) for p in entry.plot(result, out)]
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
        "plots": [p.name for p in plots],
        **result,
    }
    payload.setdefault("tables", [])
    path = write_json(out / f"{prefix}{entry.name}.json", payload)
    for tab in payload["tables"]:
        print(format_table(tab), end="\n\n")
    print(f"wrote {path} and {len(plots)} plot(s) in {run_s + plot_s:.1f} s", flush=True)
    return payload


def _selected(registry: Registry, name: str) -> list[Entry]:
    if name == "all":
        return [registry.get(n) for n in registry.names()]
    try:
        return [registry.get(name)]
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def _cmd_list(args: argparse.Namespace) -> int:
    for title, registry in (("experiments", EXPERIMENTS), ("benchmarks", BENCHMARKS)):
        print(f"{title} (stepsize {'reproduce' if registry is EXPERIMENTS else 'bench'} NAME):")
        for name in registry.names():
            print(f"  {name:<14} {registry.get(name).description}")
    return 0


def _cmd_run(args: argparse.Namespace, registry: Registry, prefix: str) -> int:
    entries = _selected(registry, args.name)
    out = _output_dir(args.out)
    payloads = [_run_entry(entry, args, out, prefix) for entry in entries]
    if args.name == "all" and registry is EXPERIMENTS:
        from stepsize.report import write_report

        command = "stepsize reproduce all" + (" --quick" if args.quick else "")
        print(f"wrote {write_report(out, payloads, command)}")
    return 0


def _cmd_match(args: argparse.Namespace) -> int:
    try:
        from stepsize.matching import cli_match
    except ImportError:
        raise UsageError("graph matching is not available in this installation") from None
    return cli_match(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stepsize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"stepsize {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of failures")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("list", help="list experiments and benchmarks")
    for name, help_text in (("reproduce", "run a paper reproduction"),
                            ("bench", "run a side-by-side benchmark")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("name", help="registered name, or 'all'")
        sub.add_argument("--quick", action="store_true", help="the small configuration")
        sub.add_argument("--out", default="results", help="output directory (default: results)")
        sub.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    match = commands.add_parser("match", help="match two graph files")
    match.add_argument("graph1", help="edge list (u v [w]), .npz adjacency or GraphML")
    match.add_argument("graph2")
    match.add_argument("--method", default="apfp", help="apfp (default), ga, ipfp, dspfp, ...")
    match.add_argument("--seed", type=int, default=0)
    match.add_argument("--out", default=None, help="CSV file for the correspondence")
    match.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    show_traceback = "--traceback" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "reproduce":
            return _cmd_run(args, EXPERIMENTS, "")
        if args.command == "bench":
            return _cmd_run(args, BENCHMARKS, "bench_")
        return _cmd_match(args)
    except UsageError as exc:
        print(f"stepsize: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as exc:
        if show_traceback:
            raise
        print(f"stepsize: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stepsize: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked
        if show_traceback:
            raise
        print(f"stepsize: error: {type(exc).__name__}: {exc} (rerun with --traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
