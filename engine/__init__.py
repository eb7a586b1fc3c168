"""NLICA Lab engine: simulation, likelihood estimators, training and evaluation. No Qt here."""

__version__ = "0.1.0"
