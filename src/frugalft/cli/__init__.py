"""The ``frugalft`` command line. Each concern adds a Typer sub-app in its own module here."""
