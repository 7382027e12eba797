"""Running a plan: the Ray Tune runner, per-arm searchers and schedulers, the trainable
that drives an objective in a Ray worker, progress, and the driver's ledger of trials."""
