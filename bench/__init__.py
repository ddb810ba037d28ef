"""Throughput and cost measurements of qgf, written as JSON (see bench/README.md)."""
