"""Helpers shared by every test tier: one copy of each, imported where needed."""
