"""`python -m autograder COMMAND`: the instructor's tools."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="regenerate course/ from solutions/ (nbgrader generate_assignment)")
    rel.add_argument("lessons", nargs="*", help="lesson folders (default: all)")
    args = parser.parse_args(argv)
    if args.command == "release":
        from autograder.release import release

        release(args.lessons or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
