"""The benchmark suite of objstore-wfp: ``python -m benchmarks`` (or ``make bench``).

Not part of the test run. See ``benchmarks/README.md`` for what each figure means.
"""
