"""Rapport's benchmarks: our figures against bare baselines, as ratios (see README.md)."""
