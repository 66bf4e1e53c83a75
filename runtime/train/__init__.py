"""The trainer and its recipe: configs, schedule, sampler, log, faults."""
