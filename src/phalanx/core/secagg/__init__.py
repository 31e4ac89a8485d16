"""core/secagg package."""
