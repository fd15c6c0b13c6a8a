"""``interp vocabularies show|fetch`` (attached to the group defined in cli.py)."""
