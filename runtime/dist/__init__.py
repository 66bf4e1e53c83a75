"""Processes: torch.distributed set-up, the local launcher, host memory policy."""
