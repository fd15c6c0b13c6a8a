"""Built-in interpcore plugin interp_open_clip (being written)."""
