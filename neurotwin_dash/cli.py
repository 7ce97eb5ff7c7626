"""The ``neurotwin`` command line.

Each sub-command is a ``_add_<name>(subparsers)`` function that declares its options and
points ``func`` at the code that runs it; the library does the work, this module only
parses arguments and prints.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _add_catalog(sub):
    p = sub.add_parser("catalog", help="list or describe the datasets of the data catalog")
    csub = p.add_subparsers(dest="catalog_cmd", required=True)
    csub.add_parser("list", help="print the catalog as a table").set_defaults(func=_catalog_list)
    d = csub.add_parser("show", help="describe one dataset")
    d.add_argument("name")
    d.set_defaults(func=_catalog_show)


def _catalog_list(args):
    from . import catalog
    print(catalog.table())


def _catalog_show(args):
    from . import catalog
    entry = catalog.describe(args.name)
    for key, value in entry.items():
        print(f"{key}: {value}")
    obj = catalog.load(args.name)
    print(repr(obj))


COMMANDS = [_add_catalog]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurotwin", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        # Input errors: one clear line, no traceback.
        print(f"neurotwin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
