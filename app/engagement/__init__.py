"""engagement domain."""
