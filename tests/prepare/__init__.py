"""Tests of the `nmt.prepare` package."""
