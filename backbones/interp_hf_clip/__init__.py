"""Built-in interpcore plugin interp_hf_clip (being written)."""
