"""rigctl lab (placeholder)."""
