"""``interp report RUN_DIR`` (attached to the top-level group defined in cli.py)."""
