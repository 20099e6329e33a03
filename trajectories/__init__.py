"""Camera-motion presets (one YAML file each), shipped as package data ``mirage.data.trajectories``: see mirage/data."""
