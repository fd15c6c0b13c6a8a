"""Built-in interpcore plugin interp_timm (being written)."""
