"""Scorers usable by any task."""
