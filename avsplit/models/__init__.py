"""Separation networks and the registry of bundled weights."""
