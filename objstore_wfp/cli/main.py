"""Argument parsing, error reporting and exit codes for ``objstore-wfp``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum
from typing import Any, NoReturn

from objstore_wfp import __version__
from objstore_wfp.cli.store import DEFAULT_STORE, STORE_ENV, choose_store
from objstore_wfp.errors import (
    BackendError,
    CannotCancelError,
    CannotPauseError,
    ClaimLostError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    SerializationError,
)
from objstore_wfp.runtime.errors import FlowDefinitionError

PROG = "objstore-wfp"
#: Set to 1 to get the traceback of an internal error (a bug) instead of one line.
DEBUG_ENV = "OBJSTORE_WFP_DEBUG"


class ExitCode(IntEnum):
    """What the process's exit status means; ``docs/runtime.md`` and ``--help`` list them."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    INTERNAL = 70
    INTERRUPTED = 130


EXIT_CODES_HELP = """\
exit codes:
  0    done
  1    failed: the store is unreachable or refused (ignores conditional writes, missing
       extra, unknown URL scheme) or holds an unreadable object; the demo did not complete
  2    bad usage: unknown command or option, bad value (URL, id, duration, --flow, -o)
  3    not found: no store at that path, no such instance or claim
  4    conflict: the instance's state or the store's contents forbid it (cancel, pause or
       signal a completed instance; a demo over existing instances without --replace)
  70   internal error (a bug: please report it; OBJSTORE_WFP_DEBUG=1 shows the traceback)
  130  interrupted
With --json, an error is one JSON object on stderr: {"error": ..., "type": ..., "exit_code": ...}."""

#: The first match decides: subclasses before their bases.
_EXIT_BY_ERROR: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (InvalidArgumentError, ExitCode.USAGE),
    (FlowDefinitionError, ExitCode.USAGE),
    (NotFoundError, ExitCode.NOT_FOUND),
    (ConflictError, ExitCode.CONFLICT),
    (CannotCancelError, ExitCode.CONFLICT),
    (CannotPauseError, ExitCode.CONFLICT),
    (ClaimLostError, ExitCode.CONFLICT),
    (BackendError, ExitCode.FAILED),
    (OSError, ExitCode.FAILED),
    # An extra that is not installed (the demo without rich).
    (ImportError, ExitCode.FAILED),
)


class UsageError(Exception):
    """A command line argparse refused; ``prog`` is the (sub)command it was parsing."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{message} (see '{prog} --help')")
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage and exits; the CLI reports usage errors like any other error
    # (one line, or a JSON object with --json).
    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def _subcommand(
    sub: Any, name: str, summary: str, parents: list[argparse.ArgumentParser], details: str = ""
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        parents=parents,
        help=summary,
        description=summary[0].upper() + summary[1:] + "." + (f"\n\n{details}" if details else ""),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    # --store defaults to None and is resolved when a command runs (choose_store): the parser
    # must not bake in the environment, and demo's "no --store" means a fresh folder.
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store",
        metavar="URL",
        help=f"a path, file://, memory://, s3://, gs://, az:// (+obstore: s3+obstore://...) "
        f"(default: ${STORE_ENV} or {DEFAULT_STORE})",
    )
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="storage option passed to fsspec (repeatable), e.g. -o endpoint_url=http://127.0.0.1:9000",
    )
    options.add_argument(
        "--json", action="store_true", help="print JSON instead of tables (errors: one JSON object on stderr)"
    )
    common = [store, options]

    parser = _Parser(
        prog=PROG,
        description="Inspect and run workflows persisted on local disk or object storage.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _subcommand(
        sub,
        "demo",
        "run the demo: workers share workflows, one is killed mid-task and another takes over",
        common,
        "Without --store the demo uses a fresh temporary folder and prints where it is "
        f"(${STORE_ENV} is not used: the demo\nwrites only into a store named on its command line).",
    )
    demo.add_argument("--instances", type=int, default=12, help="workflow instances (default 12)")
    demo.add_argument("--workers", type=int, default=4, help="worker processes, at least 2 (default 4)")
    demo.add_argument("--concurrency", type=int, default=2, help="tasks each worker runs at once (default 2)")
    demo.add_argument("--lease", type=float, default=3.0, help="claim TTL in seconds (default 3)")
    demo.add_argument("--work", type=float, default=0.4, help="mean simulated work per task, s (default 0.4)")
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    demo.add_argument("--no-kill", action="store_true", help="do not kill a worker")
    demo.add_argument(
        "--replace", action="store_true", help="overwrite the demo's order-NNN instances if --store has them"
    )

    ls = _subcommand(sub, "ls", "list workflow instances", common)
    ls.add_argument(
        "--state", choices=["in_progress", "completed", "failed", "cancelled"], help="only this state"
    )

    show = _subcommand(
        sub,
        "show",
        "show one instance: state, input, output, task results, claims",
        common,
        "A finished instance's snapshot does not list its tasks: its results are found through its\n"
        "flow (the demo's is built in; give others with --flow).",
    )
    show.add_argument("instance_id")
    show.add_argument(
        "--flow", action="append", metavar="MODULE:ATTR", help="flow(s) whose task results to look up"
    )

    claims = _subcommand(sub, "claims", "list live task claims", common)
    claims.add_argument("--instance", help="only claims of this instance")
    claims.add_argument("--all", action="store_true", help="include expired claims nobody took over")

    find = _subcommand(sub, "find", "list tasks available to workers now", common)
    find.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    cancel = _subcommand(sub, "cancel", "cancel an instance", common)
    cancel.add_argument("instance_id")
    cancel.add_argument("--reason", default="cancelled from the command line")

    pause = _subcommand(
        sub,
        "pause",
        "pause an instance: none of its tasks is offered until unpause",
        common,
        "A task already running finishes and its result is recorded. Pausing a paused instance\n"
        "keeps the first request; a completed, failed or cancelled instance cannot be paused (exit 4).",
    )
    pause.add_argument("instance_id")
    pause.add_argument("--reason", default="paused from the command line")

    unpause = _subcommand(
        sub,
        "unpause",
        "resume a paused instance where it stood (nothing happens if it is not paused)",
        common,
    )
    unpause.add_argument("instance_id")

    signal = _subcommand(
        sub,
        "signal",
        "send a signal to an instance",
        common,
        "The first step waiting for NAME gets it (once); sent before the instance waits, it is kept\n"
        "for it. A completed, failed or cancelled instance takes no signal (exit 4).",
    )
    signal.add_argument("instance_id")
    signal.add_argument("name", help="the signal's name")
    signal.add_argument(
        "--payload", default="null", metavar="JSON", help="the value it carries (default null)"
    )

    gc = _subcommand(sub, "gc", "delete finished instances last updated longer ago than --older-than", common)
    gc.add_argument("--older-than", default="7d", metavar="AGE", help="e.g. 45s, 30m, 12h, 7d (default 7d)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")

    repair = _subcommand(
        sub, "repair", "mend what crashed writers left: missing index entries, orphans", common
    )
    repair.add_argument(
        "--grace", default="10m", metavar="AGE", help="leave younger orphans alone (default 10m)"
    )

    probe = _subcommand(
        sub,
        "probe",
        "check that a store enforces create-if-absent, compare-and-swap and conditional delete",
        [options],
        "Writes and deletes a few objects under _probe/ in the store. A local folder must exist.",
    )
    probe.add_argument("url", metavar="URL", help="the store to probe")

    worker = _subcommand(
        sub,
        "worker",
        "run a worker for flows given as module:attribute",
        common,
        "Modules are imported with the current directory on the path. SIGTERM stops it gracefully.",
    )
    worker.add_argument(
        "--flow", action="append", required=True, metavar="MODULE:ATTR", help="flow(s) to run"
    )
    worker.add_argument("--worker-id", help="default <host>-<pid>-<random>")
    worker.add_argument("--concurrency", type=int, default=4, help="tasks at once (default 4)")
    worker.add_argument("--lease", type=float, default=30.0, help="claim TTL in seconds (default 30)")
    worker.add_argument("--poll", type=float, default=1.0, help="seconds between polls when idle (default 1)")
    worker.add_argument(
        "--max-poll",
        type=float,
        metavar="SECONDS",
        help="idle polls back off up to this; also bounds how late a delay or signal is taken up "
        "(default 16 x --poll)",
    )
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


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of an error the CLI reports; :attr:`ExitCode.INTERNAL` for anything else."""
    for kind, code in _EXIT_BY_ERROR:
        if isinstance(exc, kind):
            return code
    return ExitCode.INTERNAL


def _message(exc: BaseException, args: argparse.Namespace | None) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, BackendError):
        text = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, SerializationError) and args is not None and args.choice is not None:
        # The backend names the object by its key; the store tells where that key lives.
        text = f"in store {args.choice.url}: {text}"
    if exit_code_for(exc) is ExitCode.INTERNAL:
        text = (
            f"internal error (a bug, please report it; {DEBUG_ENV}=1 shows where): "
            f"{type(exc).__name__}: {text}"
        )
    return " ".join(text.split())


def _report(message: str, code: ExitCode, kind: str, as_json: bool, prog: str = PROG) -> None:
    if as_json:
        doc = {"error": message, "type": kind, "exit_code": int(code)}
        sys.stderr.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        sys.stderr.write(f"{prog}: error: {message}\n")


class _WarningFormatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(record.getMessage().split())
        return json.dumps({"warning": message}) if self.as_json else f"{PROG}: warning: {message}"


@contextmanager
def _warnings_to_stderr(as_json: bool) -> Iterator[None]:
    """The library's warnings (e.g. an unreadable claim skipped) as one line each, in the
    format of the command's errors; without a handler Python would print bare messages."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_WarningFormatter(as_json))
    logger = logging.getLogger("objstore_wfp")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command and return its exit code (:class:`ExitCode`). Every error is one line
    on stderr (``objstore-wfp: error: ...``), or with ``--json`` one JSON object
    ``{"error": str, "type": str, "exit_code": int}``; nothing ends in a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        # Keys from a foreign store may hold undecodable bytes (surrogates): print, don't crash.
        reconfigure(errors="backslashreplace")
    args: argparse.Namespace | None = None
    try:
        parser = _parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Name the subcommand whose --help lists what it takes (argparse names the top one).
            raise UsageError(f"{PROG} {args.command}", f"unrecognized arguments: {' '.join(extra)}")
        command_store = "store" in args and args.command != "demo"
        args.choice = choose_store(args.store) if command_store else None
        with _warnings_to_stderr(as_json):
            return _dispatch(args)
    except UsageError as exc:
        _report(str(exc), ExitCode.USAGE, "UsageError", as_json, exc.prog)
        return ExitCode.USAGE
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining
        # about flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILED
    except KeyboardInterrupt:
        _report("interrupted", ExitCode.INTERRUPTED, "KeyboardInterrupt", as_json)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        code = exit_code_for(exc)
        if code is ExitCode.INTERNAL and os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc()
        _report(_message(exc, args), code, type(exc).__name__, as_json)
        return code
