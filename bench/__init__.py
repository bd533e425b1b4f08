"""pftbench harness: config schema, tasks, generation, training loop, runner, stats, cache, CLI."""

__version__ = "0.1.0"
