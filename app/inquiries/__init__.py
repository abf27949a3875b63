"""inquiries domain."""
