"""govstream: the composition root (settings, CLI, local infrastructure)."""
