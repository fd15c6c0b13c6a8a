"""Built-in interpcore plugin interp_falcon (being written)."""
