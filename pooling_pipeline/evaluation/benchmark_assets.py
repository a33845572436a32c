"""load_benchmark (placeholder until the benchmark issue lands)."""

BENCHMARK_ASSETS: list = []
