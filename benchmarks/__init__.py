"""TriVault benchmarks package."""
