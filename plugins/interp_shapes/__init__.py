"""Built-in interpcore plugin interp_shapes (being written)."""
