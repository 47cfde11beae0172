"""Experiment harness for context-parallel attention in diffusion transformers."""
