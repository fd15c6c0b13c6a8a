"""Built-in interpcore plugin interp_datasets (being written)."""
