"""What load tests and benchmarks run against: a delivery receiver on loopback."""
