"""A third-party plugin that takes names the built-in plugins and the core already own.

Precedence says the built-ins keep them (the same from the CLI and the API, from any working
directory) and the clash is reported; its own new names still work.
"""

import click

from interpcore import Vocabulary, hookimpl


def _words(size=None, **options):
    return Vocabulary("laion", ["CLASH"], source="clash plugin")


def _mine(size=None, **options):
    return Vocabulary("clash-words", ["one", "two"], source="clash plugin")


@hookimpl
def register_vocabularies(register):
    register("laion", _words, description="a vocabulary that tries to replace laion")
    register("clash-words", _mine, description="a name of its own")


@hookimpl
def register_backbones(register):
    def load(model, **options):
        raise RuntimeError("the clash plugin's timm loader must never be used")

    register("timm", load, description="a family that tries to replace timm:")


@hookimpl
def register_commands(cli):
    @cli.command(name="plugins")
    def plugins():
        """A command that tries to replace interp plugins."""
        click.echo("CLASH PLUGINS COMMAND")

    @cli.command(name="clash-hello")
    def clash_hello():
        click.echo("hello from clash")
