"""NLICA Lab entry point: no arguments opens the window; subcommands run headless; --self-test checks."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
from collections.abc import Iterator


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up (torch and Qt take seconds to import)
        print("nlica-lab: interrupted (Ctrl-C) while starting; nothing was written", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _starting() -> Iterator[None]:
    """A Ctrl-C while the libraries load is held, not raised inside their imports (where an except clause
    could swallow it); when they are loaded it ends the program (exit code 130)."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _main(argv: list[str] | None) -> int:
    from engine.threads import configure_openmp

    configure_openmp()  # OpenMP reads its wait policy once, when torch is imported
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--self-test":
        with _starting():
            from gui.selftest import run_self_test

        return run_self_test()
    if (argv and not argv[0].startswith("-")) or argv[:1] in (["-h"], ["--help"]):
        with _starting():
            import engine.cli

        engine.cli.RENDER_PNG = _render_png  # select-m's figure is drawn by Qt offscreen: the engine has no Qt
        return engine.cli.main(argv)
    if not display_available():
        print("nlica-lab: no display found (DISPLAY/WAYLAND_DISPLAY unset), so the window cannot open; "
              "the headless commands still work: python main.py --help", file=sys.stderr)
        return 2
    missing = missing_xcb_libraries()
    if missing:
        print("nlica-lab: Qt's X11 (xcb) platform needs " + ", ".join(missing) + "; install them with "
              "`apt-get install libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0` (Debian/Ubuntu)", file=sys.stderr)
        return 2
    with _starting():
        from gui.app import run_app

    return run_app(argv)


def _render_png(chart: dict) -> bytes:
    from gui.figures import render_png

    return render_png(chart)


def missing_xcb_libraries() -> list[str]:
    """System libraries Qt's xcb plugin loads but does not bundle (Qt would abort, blaming xcb-cursor0)."""
    import ctypes.util
    import os

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "xcb") != "xcb" \
            or not os.environ.get("DISPLAY"):
        return []
    names = ("xcb-icccm", "xcb-keysyms", "xcb-cursor")
    return [f"lib{name}" for name in names if ctypes.util.find_library(name) is None]


def display_available() -> bool:
    """Linux needs an X11 or Wayland display unless Qt is told to render offscreen."""
    import os

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "") in ("offscreen", "minimal"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


if __name__ == "__main__":
    multiprocessing.freeze_support()
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C while the interpreter shuts down changes nothing
    sys.exit(code)
