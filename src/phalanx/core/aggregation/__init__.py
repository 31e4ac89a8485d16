"""core/aggregation package."""
