"""CLI commands that belong to no other module."""
