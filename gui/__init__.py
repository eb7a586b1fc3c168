"""NLICA Lab desktop GUI (PySide6 + pyqtgraph). The engine never imports this package."""
