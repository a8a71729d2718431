"""Tests of the `nmt.export` package."""
