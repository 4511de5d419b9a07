"""``python -m objstore_wfp``: the ``objstore-wfp`` command."""

from objstore_wfp.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
