"""Fault tests: a dependency of the running app is stopped and started again (issue #9)."""
