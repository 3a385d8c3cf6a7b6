"""Benchmarks: scripts that measure accuracy and speed and print a table."""
