"""`python -m fusionrec` and the `fusionrec` script. A starting worker lowers its CPU priority here,
before the command line's imports (0.4 s of CPU on an idle host, more under load), so that its whole start yields to a
worker already serving on the host (fusionrec.priority); it returns to normal as it joins.

A worker process (not a spare's supervisor) also starts with the cycle collector off: its start is
long-lived objects only, and the collections it triggered visited the growing heap for nothing
(streams.gc_tuning). `tune_gc` turns it back on before the group is joined.

And with one OpenBLAS thread from numpy's import on (unless OPENBLAS_NUM_THREADS is set): the worker
limits BLAS to one thread anyway (streams.faust_worker.run_worker), but numpy's import had already
started a thread per core, whose spinning cost 0.04-0.05 s of CPU in every start here (numpy's import
took 0.10-0.12 s of CPU with them, 0.05-0.07 s with one), taken from the start on a busy host."""

import gc
import os
import sys

from fusionrec import priority


def main() -> None:
    args = sys.argv[1:]
    if priority.worker_process(args):
        gc.disable()
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if priority.starting_worker(args):
        priority.lower()
    from fusionrec.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # guarded: spawned child processes (a writer restarted mid-run) import this module
    main()
