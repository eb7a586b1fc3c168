"""NLICA Lab engine: simulation, likelihood estimators, training and evaluation. No Qt here."""

from .threads import configure_openmp

configure_openmp()  # before anything imports torch (engine/threads.py)

__version__ = "0.1.0"
