"""onward.sim (filled in below)."""
