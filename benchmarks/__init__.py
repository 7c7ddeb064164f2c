"""`make bench`: speed and memory figures, written to benchmarks/results.json and BENCHMARKS.md."""
