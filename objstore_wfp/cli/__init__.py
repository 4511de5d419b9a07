"""The ``objstore-wfp`` command: inspect and maintain a store, run workers, run the demo."""
