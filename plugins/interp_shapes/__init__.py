"""Built-in interpcore plugin: the synthetic shapes world (datasets, vocabularies, commands)."""
