"""Built-in interpcore plugin interp_splice (being written)."""
