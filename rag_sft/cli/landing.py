"""`rag-sft landing`: what the landing folder holds as the index sees it, and a person's word
that a day's lines lost with deleted or shrunk files are gone for good."""

from __future__ import annotations

import argparse
import sys
from datetime import date


def _landing_folder():
    from rag_sft.io.sources.landing import LandingFolder
    from rag_sft.resources import EventSource, Warehouse

    source = EventSource().open(Warehouse().state_dir())  # settings from the environment, read now
    if not isinstance(source, LandingFolder):
        raise SystemExit("error: the event source is not a landing folder (RAG_SFT_SOURCE=sql)")
    return source


def cmd_losses(args: argparse.Namespace) -> int:
    folder = _landing_folder()
    folder.refresh_index()
    losses = folder.index().losses()
    for loss in losses:
        print(loss.describe())
    ignored = folder.ignored_files()
    if ignored:
        print(f"{len(ignored)} files not read (not JSON Lines by name, see RAG_SFT_LANDING_PATTERN): {', '.join(ignored[:20])}")
    if not losses:
        print("No day has lost lines.")
    return 0


def cmd_accept_loss(args: argparse.Namespace) -> int:
    folder = _landing_folder()
    lost = folder.accept_loss(args.day)
    if lost is None:
        print(f"{args.day}: no lost lines to accept", file=sys.stderr)
        return 1
    print(f"accepted: {lost.describe()}")
    again = (
        f"`rag-sft run --start {args.day} --end {args.day}`"
        if lost.lines_now
        else "materializing the day in the UI: `rag-sft run` only runs days that hold events"
    )
    print(f"The day runs again with {lost.lines_now} lines: the change sensor takes it, or {again}.")
    return 0


def add_parser(sub) -> None:
    landing = sub.add_parser("landing", help="the landing folder's days that lost lines, and accepting a loss")
    commands = landing.add_subparsers(dest="landing_command", required=True)
    losses = commands.add_parser("losses", help="days whose files went away or shrank, and files not read")
    losses.set_defaults(func=cmd_losses)
    accept = commands.add_parser("accept-loss", help="accept that a day's lost lines are gone: it is run with what is left")
    accept.add_argument("day", type=date.fromisoformat, help="the day, YYYY-MM-DD")
    accept.set_defaults(func=cmd_accept_loss)
