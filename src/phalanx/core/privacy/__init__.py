"""core/privacy package."""
