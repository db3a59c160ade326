"""TAT-VPR hardware codesign flow: config, data, training, evaluation, export, reports, CLI."""

__version__ = "0.1.0"
