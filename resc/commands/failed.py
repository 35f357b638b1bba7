"""`resc failed CONF`: every failed list of a config (the watchers' and the workers'):
list the failed events and tasks, requeue them, or delete them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from resc.commands.common import load_config_or_exit, positive_int, redis_url_or_none
from resc.core.errors import EXIT_FATAL, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from resc.config.regex import Regex
    from resc.ops.failed import FailedItem, FailedList, FailedStore, Outcome

NAME = "failed"
HELP = "list the failed events and tasks of every failed list, requeue or delete them"

EPILOG = """\
Failed lists: each watcher's failed queue (its events go back to the watcher's input
queue) and QUEUE/failed of each todo queue the makes name (its tasks go back to QUEUE;
with a dedup set, only when the set does not hold the task already). Todo queues named
with variables are found with the make's queue_glob or --queue GLOB.

  resc failed conf.hjson                                  list them
  resc failed conf.hjson --requeue --reason 'HTTP 503'    requeue those that failed so
  resc failed conf.hjson --delete --all --yes             delete every one
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", metavar="CONF", help="config file (.hjson or .json)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--requeue", action="store_true", help="move the selected copies back to their queue"
    )
    action.add_argument("--delete", action="store_true", help="delete the selected copies")
    parser.add_argument("--all", action="store_true", help="select every copy")
    parser.add_argument("--item", metavar="TEXT", help="select the copies of exactly this text")
    parser.add_argument(
        "--match", metavar="REGEX", help="select the copies whose text this regex finds"
    )
    parser.add_argument(
        "--reason", metavar="REGEX", help="select the copies whose reason this regex finds"
    )
    parser.add_argument(
        "--list",
        metavar="NAME",
        action="append",
        default=[],
        help="only this failed list (repeatable)",
    )
    parser.add_argument(
        "--queue",
        metavar="GLOB",
        action="append",
        default=[],
        help="also the failed lists of the todo queues matching this glob, e.g. "
        "'trt/*/todo-queue' (repeatable)",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="at most the N oldest copies of each list, to list or act on (default: 10000)",
    )
    parser.add_argument(
        "--max-keys",
        type=positive_int,
        default=1000,
        metavar="N",
        help="at most N failed lists found per glob (default: 1000)",
    )
    parser.add_argument("--yes", action="store_true", help="delete without asking")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help='the Redis to use instead of the config\'s redis.url (needed when it is "embedded")',
    )


def _show(text: bytes) -> str:
    return text.decode("utf-8", "backslashreplace")


def _compile(option: str, source: str | None) -> Regex | str | None:
    """The compiled regex, None without one, or the message when it is invalid."""
    if source is None:
        return None
    from resc.config.regex import compile_regex

    try:
        return compile_regex(source)
    except ValueError as exc:
        return f"{option}: {exc}"


def _when(time_s: float | None) -> str:
    if time_s is None:
        return "time n/a"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time_s))


def _describe(fl: FailedList) -> str:
    where = f"{fl.kind} -> {fl.queue}"
    if fl.set is not None:
        where += f", set {fl.set}"
    elif fl.set_unknown:
        where += ", set unknown"
    return where


def _item_json(item: FailedItem) -> dict[str, Any]:
    record = item.record
    return {
        "text": _show(item.text),
        "reason": record.reason if record else None,
        "time": record.time_s if record else None,
        "attempts": record.attempts if record else None,
    }


def main(args: argparse.Namespace) -> int:
    from resc.core.errors import StoreError
    from resc.ops.failed import FailedStore

    config = load_config_or_exit(args.config)
    changing = args.requeue or args.delete
    selectors = args.all or args.item is not None or args.match or args.reason
    if changing and not selectors:
        print(
            "resc: say which copies: --all, --item TEXT, --match REGEX or --reason REGEX",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.all and (args.item is not None or args.match or args.reason):
        print("resc: --all selects every copy: give it alone", file=sys.stderr)
        return EXIT_USAGE
    text_regex = _compile("--match", args.match)
    reason_regex = _compile("--reason", args.reason)
    for problem in (text_regex, reason_regex):
        if isinstance(problem, str):
            print(f"resc: {problem}", file=sys.stderr)
            return EXIT_USAGE
    assert not isinstance(text_regex, str) and not isinstance(reason_regex, str)
    url = redis_url_or_none(config, args.redis)
    if url is None:
        return EXIT_USAGE
    try:
        store = FailedStore(url)
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    item_text = args.item.encode() if args.item is not None else None

    def accept(item: FailedItem) -> bool:
        if item_text is not None and item.text != item_text:
            return False
        if text_regex is not None and text_regex.search(item.text) is None:
            return False
        if reason_regex is not None:
            reason = item.record.reason if item.record else ""
            if reason_regex.search(reason.encode()) is None:
                return False
        return True

    try:
        found = store.find(config, args.queue, args.max_keys)
        lists = found.lists
        if args.list:
            unknown = [n for n in args.list if n not in {fl.name for fl in lists}]
            if unknown:
                known = ", ".join(fl.name for fl in lists)
                print(f"resc: no failed list {unknown[0]!r} (found: {known})", file=sys.stderr)
                return EXIT_USAGE
            lists = [fl for fl in lists if fl.name in args.list]
        snapshot = []
        for fl in lists:
            items, length = store.items(fl, args.limit)
            snapshot.append((fl, [i for i in items if accept(i)], length))
        for glob in found.truncated:
            print(
                f"resc: more than {args.max_keys} failed lists match {glob}/failed: "
                f"only {args.max_keys} are shown (--max-keys)",
                file=sys.stderr,
            )
        if not changing:
            _print_listing(store.display_url, snapshot, args.json)
            return EXIT_OK
        return _change(store, snapshot, args)
    except StoreError as exc:
        print(f"resc: {exc}", file=sys.stderr)
        return EXIT_FATAL
    finally:
        store.close()


def _print_listing(
    url: str, snapshot: list[tuple[FailedList, list[FailedItem], int]], as_json: bool
) -> None:
    if as_json:
        data = {
            "redis": url,
            "lists": [
                {
                    "name": fl.name,
                    "kind": fl.kind,
                    "queue": fl.queue,
                    "set": fl.set,
                    "length": length,
                    "items": [_item_json(i) for i in items],
                }
                for fl, items, length in snapshot
            ],
        }
        print(json.dumps(data, indent=2))
        return
    print(f"Redis {url}")
    for fl, items, length in snapshot:
        shown = f"{len(items)} of {length} shown" if len(items) != length else f"{length}"
        print(f"{fl.name} ({_describe(fl)}): {shown}")
        for item in items:
            record = item.record
            if record is None:
                print(f"  {_show(item.text)}  <- (no reason recorded)")
                continue
            attempts = f"attempts {record.attempts}" if record.attempts is not None else ""
            details = "  ".join(p for p in (_when(record.time_s), attempts) if p)
            print(f"  {_show(item.text)}  <- {record.reason}  ({details})")


def _change(
    store: FailedStore,
    snapshot: list[tuple[FailedList, list[FailedItem], int]],
    args: argparse.Namespace,
) -> int:
    total = sum(len(items) for _, items, _ in snapshot)
    if args.requeue:
        unknown = [fl.name for fl, items, _ in snapshot if items and fl.set_unknown]
        if unknown:
            print(
                f"resc: the dedup set of {unknown[0]} cannot be named from its queue's name "
                "(the set pattern has variables the queue pattern lacks): not requeued, "
                "as that would leave its tasks out of their set",
                file=sys.stderr,
            )
            return EXIT_USAGE
    if args.delete and total and not args.yes and not _confirmed(total):
        return EXIT_USAGE
    from resc.core.errors import StoreError
    from resc.ops.failed import Outcome

    results: list[tuple[FailedList, Outcome]] = []
    error = None
    for fl, items, _ in snapshot:
        outcome = Outcome()
        results.append((fl, outcome))
        try:
            (store.requeue if args.requeue else store.delete)(items, outcome)
        except StoreError as exc:
            # What was done is done (each copy atomically): say how far it went.
            error = str(exc)
            break
    _print_outcomes(store.display_url, results, args)
    if error is not None:
        print(f"resc: stopped: {error}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK


def _print_outcomes(
    url: str, results: list[tuple[FailedList, Outcome]], args: argparse.Namespace
) -> None:
    if args.json:
        verb = "requeued" if args.requeue else "deleted"
        data = [
            {
                "name": fl.name,
                verb: o.done,
                **({"already_queued": o.already_queued} if args.requeue else {}),
                "gone": o.gone,
            }
            for fl, o in results
        ]
        print(json.dumps({"redis": url, "lists": data}, indent=2))
        return
    for fl, o in results:
        notes = []
        if o.already_queued:
            notes.append(f"{o.already_queued} already in {fl.set}, not pushed again")
        if o.gone:
            notes.append(f"{o.gone} gone meanwhile")
        note = f" ({'; '.join(notes)})" if notes else ""
        if args.requeue:
            print(f"{fl.name}: {o.done} moved back to {fl.queue}{note}")
        else:
            print(f"{fl.name}: {o.done} deleted{note}")


def _confirmed(total: int) -> bool:
    """Asked on the terminal; refused (with the reason) without one."""
    if not sys.stdin.isatty():
        print(
            f"resc: deleting {total} failed copies needs confirmation: run it on a terminal, "
            "or add --yes",
            file=sys.stderr,
        )
        return False
    try:
        answer = input(f"Delete {total} failed copies for good? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("resc: nothing deleted", file=sys.stderr)
    return False
