"""The native-vs-polyloop benchmark harness: ``python -m benchmarks --help``."""
