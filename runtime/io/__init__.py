"""Weights, checkpoints, model information and run folders in and out, and atomic writes."""
