"""``python -m rearm_dgl``: the ``rearm-dgl`` command line."""

from rearm_dgl.cli import main

if __name__ == "__main__":
    main(prog_name="rearm-dgl")
