"""onward.report (filled in below)."""
