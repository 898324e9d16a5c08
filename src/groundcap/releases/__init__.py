"""Release versions and what changed between two releases."""
