"""Tests of nmt.train, one file per module."""
