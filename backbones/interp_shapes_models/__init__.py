"""Built-in interpcore plugin interp_shapes_models (being written)."""
