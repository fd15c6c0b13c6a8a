"""A well-behaved third-party plugin: one vocabulary, one dataset, one command."""

import click

from interpcore import Vocabulary, hookimpl


@hookimpl
def register_vocabularies(register):
    register("good-words", lambda size=None, **kw: Vocabulary("good-words", ["alpha", "beta", "gamma"][-size if size else 0:]),
             description="three Greek letters")


@hookimpl
def register_commands(cli):
    @cli.command(name="good-hello")
    def good_hello():
        """Say hello from the good plugin."""
        click.echo("hello from goodplugin")
