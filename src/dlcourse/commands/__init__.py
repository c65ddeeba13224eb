"""The console commands: one module per command of pyproject.toml's [project.scripts].
Nothing else in the package imports them."""
