"""Weights and checkpoints in and out, and atomic writes."""
