"""Example scenes, installed from the repository's ``examples/<name>/`` folders (pyproject.toml ``package-dir``)."""
