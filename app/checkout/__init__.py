"""checkout domain."""
