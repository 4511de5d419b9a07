"""Argument parsing and error reporting for ``objstore-wfp``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from objstore_wfp import __version__
from objstore_wfp.cli.store import STORE_ENV, default_store
from objstore_wfp.errors import BackendError
from objstore_wfp.runtime.errors import FlowDefinitionError

PROG = "objstore-wfp"


def _parser() -> argparse.ArgumentParser:
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store",
        default=default_store(),
        metavar="URL",
        help=f"a path, file://, memory://, s3://, gs://, az:// (default: ${STORE_ENV} or ./wfp-data)",
    )
    store.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="storage option passed to fsspec (repeatable), e.g. -o endpoint_url=http://127.0.0.1:9000",
    )
    store.add_argument("--json", action="store_true", help="print JSON instead of tables")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Inspect and run workflows persisted on local disk or object storage."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", parents=[store], help="run the demo: workers share workflows, one is killed mid-task"
    )
    demo.set_defaults(store=None)
    demo.add_argument("--instances", type=int, default=12, help="workflow instances (default 12)")
    demo.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--concurrency", type=int, default=2, help="tasks per worker at once (default 2)")
    demo.add_argument("--lease", type=float, default=3.0, help="claim TTL in seconds (default 3)")
    demo.add_argument("--work", type=float, default=0.4, help="mean simulated work per task, s (default 0.4)")
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    demo.add_argument("--no-kill", action="store_true", help="do not kill a worker")
    demo.epilog = "Without --store the demo uses a fresh temporary folder and prints where it is."

    ls = sub.add_parser("ls", parents=[store], help="list workflow instances")
    ls.add_argument(
        "--state", choices=["in_progress", "completed", "failed", "cancelled"], help="only this state"
    )

    show = sub.add_parser("show", parents=[store], help="show one instance: state, results, claims")
    show.add_argument("instance_id")

    claims = sub.add_parser("claims", parents=[store], help="list live task claims")
    claims.add_argument("--instance", help="only claims of this instance")
    claims.add_argument("--all", action="store_true", help="include expired claims nobody took over")

    find = sub.add_parser("find", parents=[store], help="list tasks available to workers")
    find.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    cancel = sub.add_parser("cancel", parents=[store], help="cancel an instance")
    cancel.add_argument("instance_id")
    cancel.add_argument("--reason", default="cancelled from the command line")

    gc = sub.add_parser("gc", parents=[store], help="delete finished instances older than a given age")
    gc.add_argument("--older-than", default="7d", metavar="AGE", help="e.g. 45s, 30m, 12h, 7d (default 7d)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")

    repair = sub.add_parser("repair", parents=[store], help="mend what crashed writers left (index, orphans)")
    repair.add_argument(
        "--grace", default="10m", metavar="AGE", help="leave younger orphans alone (default 10m)"
    )

    probe = sub.add_parser("probe", parents=[store], help="check that a store enforces conditional writes")
    probe.add_argument("url", help="the store URL to probe")

    worker = sub.add_parser(
        "worker", parents=[store], help="run a worker for flows given as module:attribute"
    )
    worker.add_argument(
        "--flow", action="append", required=True, metavar="MODULE:ATTR", help="flow(s) to run"
    )
    worker.add_argument("--worker-id", help="default <host>-<pid>-<random>")
    worker.add_argument("--concurrency", type=int, default=4, help="tasks at once (default 4)")
    worker.add_argument("--lease", type=float, default=30.0, help="claim TTL in seconds (default 30)")
    worker.add_argument("--poll", type=float, default=1.0, help="seconds between polls when idle (default 1)")
    mode = worker.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="poll once, run what was claimed, exit")
    mode.add_argument("--until-idle", action="store_true", help="exit when no work is left")
    worker.add_argument("--events", metavar="FILE", help="append worker events as JSON lines")
    worker.add_argument("--quiet", action="store_true", help="no summary at exit")
    worker.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from objstore_wfp.cli import commands

    if args.command == "demo":
        from objstore_wfp.cli.demo import cmd_demo

        return cmd_demo(args)
    if args.command == "worker":
        from objstore_wfp.cli.worker_cmd import cmd_worker

        return cmd_worker(args)
    handler = getattr(commands, f"cmd_{args.command}")
    return int(asyncio.run(handler(args)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; user mistakes and store failures print one line to stderr and give a
    non-zero exit code (2 for bad usage, 1 otherwise, 130 when interrupted)."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (BackendError, FlowDefinitionError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining
        # about flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
