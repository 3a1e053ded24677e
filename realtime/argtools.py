"""Small argparse helpers shared by the command lines (the CLI's tools, training, benchmarks)."""
from __future__ import annotations

import argparse
import copy
import sys


def explicit_options(parser: argparse.ArgumentParser, argv=None) -> set[str]:
    """The destinations the command line set itself (rather than leaving them at their defaults):
    ``parser`` parses ``argv`` again with every default suppressed. A resumed training run inherits
    what its checkpoint recorded for the rest; a benchmark's --quick fills in only the rest."""
    bare = copy.deepcopy(parser)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    return set(vars(bare.parse_args(sys.argv[1:] if argv is None else argv)))
