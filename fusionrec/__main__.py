"""`python -m fusionrec` and the `fusionrec` script. A starting worker lowers its CPU priority here,
before the command line's imports (0.4 s of CPU on an idle host, more under load), so that its whole start yields to a
worker already serving on the host (fusionrec.priority); it returns to normal as it joins."""

import sys

from fusionrec import priority


def main() -> None:
    if priority.starting_worker(sys.argv[1:]):
        priority.lower()
    from fusionrec.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # guarded: spawned child processes (a writer restarted mid-run) import this module
    main()
