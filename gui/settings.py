"""UI state kept between sessions with QSettings: window geometry and dock layout, the last settings,
the last folder, view options. Every read passes an explicit `type=` (native and INI backends return
strings such as 'true' otherwise)."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QRect, QSettings

ORGANISATION = "NLICA Lab"
APPLICATION = "NLICA Lab"

GEOMETRY = "window/geometry"
WINDOW_FRAME = "window/frame"  # the window's rectangle, decorations included, when it was closed
WINDOW_STATE = "window/state"
LAST_CONFIG = "run/last_config"
LAST_DIR = "files/last_dir"
SAMPLE_COUNT = "plots/sample_count"
LOG_SIGMA = "plots/log_sigma"
ALIGN_FITS = "plots/align_fits"
PAIR_FIRST = "plots/pair_first"
PAIR_SECOND = "plots/pair_second"


class Settings:
    """Typed access to a QSettings store (the user's, or an INI file given by a test)."""

    def __init__(self, store: QSettings | None = None):
        self.store = store if store is not None else QSettings(ORGANISATION, APPLICATION)

    def get_rect(self, key: str) -> QRect:
        return self.store.value(key, QRect(), type=QRect)

    def get_bytes(self, key: str) -> QByteArray:
        return self.store.value(key, QByteArray(), type=QByteArray)

    def get_str(self, key: str, default: str = "") -> str:
        return self.store.value(key, default, type=str)

    def get_int(self, key: str, default: int) -> int:
        return self.store.value(key, default, type=int)

    def get_bool(self, key: str, default: bool) -> bool:
        return self.store.value(key, default, type=bool)

    def set(self, key: str, value: object) -> None:
        self.store.setValue(key, value)

    def sync(self) -> None:
        self.store.sync()
