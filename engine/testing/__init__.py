"""onward.testing (filled in below)."""
