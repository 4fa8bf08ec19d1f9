from fusionrec.cli import main

if __name__ == "__main__":  # guarded: spawned child processes (the worker's writer) import this module
    main()
