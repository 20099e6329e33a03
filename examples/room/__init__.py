"""The example scene of the README and ``mirage bench``, shipped as package data ``mirage.data.examples.room``: see mirage/data."""
