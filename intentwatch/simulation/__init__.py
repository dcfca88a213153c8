"""A labelled synthetic agent fleet: benign tasks and attacks, deterministic per seed."""
