"""Modules the registry tests point fake entry points at (never installed)."""
