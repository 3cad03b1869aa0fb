"""Experiment scripts: training of the embedded model, benchmarks, configs and W&B logging."""
