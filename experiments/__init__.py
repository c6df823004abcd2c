"""Tasks and data, the one training loop, evaluation, benchmarks, tables and plots."""
