"""Built-in interpcore plugin interp_vocab (being written)."""
