"""Sweeps over harness runs: expansion, local / XPK / AOT backends, and reports."""
