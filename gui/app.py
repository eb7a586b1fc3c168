"""Entry points of the GUI: `run_app(argv)` for main.py, `build_main_window()` for a self-test."""

from __future__ import annotations

import sys

from PySide6.QtGui import QPixmapCache
from PySide6.QtWidgets import QApplication

from .main_window import APP_NAME, MainWindow
from .settings import APPLICATION, ORGANISATION, Settings

PIXMAP_CACHE_KB = 256 * 1024


def application(argv: list[str] | None = None) -> QApplication:
    """The running QApplication, created if there is none."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else sys.argv)
        app.setOrganizationName(ORGANISATION)
        app.setApplicationName(APPLICATION)
        app.setApplicationDisplayName(APP_NAME)
    # The plots cache static items (data, finished runs' curves) as pixmaps, four per finished run: Qt's 10 MB
    # default holds a handful of runs, past which every live frame renders evicted ones again, slowing training
    # (bench/RESULTS.md, "GUI and engine design measurements"). A limit, not an allocation.
    QPixmapCache.setCacheLimit(max(QPixmapCache.cacheLimit(), PIXMAP_CACHE_KB))
    return app


def build_main_window(settings: Settings | None = None) -> MainWindow:
    """A main window (QApplication created if needed); `settings` lets tests use their own store."""
    application()
    return MainWindow(settings)


def run_app(argv: list[str]) -> int:
    """Create the application and the main window, show it, run the event loop; the exit code."""
    app = application(argv)
    window = MainWindow()
    app.aboutToQuit.connect(window.close)  # however the app quits: stop and join the worker, save settings
    window.show()
    return app.exec()
