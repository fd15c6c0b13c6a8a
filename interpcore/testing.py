"""Contract checks for plugin authors (also a pytest plugin: entry point pytest11)."""
