"""Mutation testing (`make mutate`): the runner is run.py; nothing here is collected by pytest."""
