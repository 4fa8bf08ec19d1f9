"""`python -m fusionrec` and the `fusionrec` script. A starting worker lowers its CPU priority here,
before the command line's imports (0.4 s of CPU on an idle host, more under load), so that its whole start yields to a
worker already serving on the host (fusionrec.priority); it returns to normal as it joins.

A worker process (not a spare's supervisor) also starts with the cycle collector off: its start is
long-lived objects only, and the collections it triggered visited the growing heap for nothing
(streams.gc_tuning). `tune_gc` turns it back on before the group is joined."""

import gc
import sys

from fusionrec import priority


def main() -> None:
    args = sys.argv[1:]
    if priority.worker_process(args):
        gc.disable()
    if priority.starting_worker(args):
        priority.lower()
    from fusionrec.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # guarded: spawned child processes (a writer restarted mid-run) import this module
    main()
