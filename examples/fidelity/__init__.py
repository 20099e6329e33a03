"""The fidelity scene of ``mirage bench fidelity``, shipped as package data ``mirage.data.examples.fidelity``: see mirage/data."""
