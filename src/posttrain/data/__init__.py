"""Reading, validating and formatting training data."""
