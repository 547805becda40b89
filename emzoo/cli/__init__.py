"""The ``emzoo`` command line: thin typer wrappers over the library, one module per command."""
