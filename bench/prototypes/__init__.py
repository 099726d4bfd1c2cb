"""Scratch prototypes of footprint and latency changes, measured by the benches (never shipped)."""
