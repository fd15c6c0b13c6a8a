"""Built-in interpcore plugin interp_prs (being written)."""
