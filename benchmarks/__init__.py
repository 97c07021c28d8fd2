"""Side-by-side speed and memory benchmarks against pytorch-metric-learning (when installed)."""
