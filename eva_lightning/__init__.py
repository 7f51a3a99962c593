"""EVA5 assignments as one Lightning project."""
