"""Regenerate the user guide's screenshots: the three exercises of the sheet, done in the app.

    QT_QPA_PLATFORM=offscreen PYTHONPATH=. .venv/bin/python -m gui.screenshots docs/img

Drives a main window (own temporary settings) through the same methods the buttons call, waits for each
run, and saves `widget.grab()` images. Takes a few minutes on a laptop CPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEventLoop, QRect, QSettings, QTimer
from PySide6.QtWidgets import QWidget

from .app import build_main_window
from .main_window import MainWindow
from .panels.model_panel import PRESET_DIR
from .settings import Settings

POINT = 3  # the data point whose posterior is shown


def wait(until: Callable[[], bool], timeout_s: float = 900.0) -> None:
    """Run the event loop until `until()` holds (checked every 50 ms)."""
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: until() and loop.quit())
    timer.start()
    QTimer.singleShot(round(timeout_s * 1000), loop.quit)
    loop.exec()
    timer.stop()
    if not until():
        raise TimeoutError("the window did not reach the expected state")


def settle(ms: int = 400) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def idle(window: MainWindow) -> Callable[[], bool]:
    return lambda: not window.controller.busy


def shoot(widget: QWidget, path: Path) -> None:
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    print(f"wrote {path}")


def run(window: MainWindow) -> None:
    window.start()
    wait(lambda: window.session.state.value in ("done", "idle", "failed") and not window.controller.busy)
    settle()


def shoot_posterior(window: MainWindow, path: Path) -> None:
    """The posterior view of data point POINT under the selected run, beside the data view."""
    window.posterior_view.set_index(POINT)
    window.compute_posterior(POINT)
    wait(idle(window))
    window.side_tabs.setCurrentWidget(window.posterior_view)
    settle()
    shoot(window.top_plots, path)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        w = build_main_window(Settings(QSettings(str(Path(tmp) / "shots.ini"), QSettings.Format.IniFormat)))
        w.fit_to_screen(QRect(0, 0, 1920, 1200))  # 1680 x 1020 and its docks, whatever screen this runs on
        w.show()
        wait(lambda: w.controller.kind == "warmup" and not w.controller.busy)

        # Exercise 1: simulate and visualise
        w.load_preset(str(PRESET_DIR / "n1m1-polynomial.json"))
        w.generate()
        wait(idle(w))
        settle()
        shoot(w, out / "ex1-n1m1.png")
        w.load_preset(str(PRESET_DIR / "sigmoid-n3m2.json"))
        w.generate()
        wait(idle(w))
        w.data_view.pairs.set_pair(0, 2)
        w.samples_view.sample_requested.emit("truth", 1000)
        wait(idle(w))
        w.side_tabs.setCurrentWidget(w.samples_view)
        settle()
        shoot(w.top_plots, out / "ex1-sigmoid-n3m2.png")

        # Exercise 2: direct MLE on n = m = 1 data from a monotone cubic (seed 5)
        w.load_preset(str(PRESET_DIR / "n1m1-polynomial.json"))
        w.model_panel.form.fields["seed"].spin.setValue(5)
        run(w)
        w.side_tabs.setCurrentWidget(w.latent_view)
        settle()
        shoot(w, out / "ex2-mle.png")
        shoot_posterior(w, out / "ex2-posterior.png")

        # Exercise 3: a VAE on the same data, then compare
        combo = w.estimator_panel.form.fields["name"].combo
        combo.setCurrentIndex(combo.findData("vae"))
        run(w)
        shoot_posterior(w, out / "ex3-vae-posterior.png")
        shoot(w, out / "ex3-compare.png")
        shoot(w, out / "main-window.png")  # the README's picture

        # The degenerate likelihood without a floor on sigma
        w.load_preset(str(PRESET_DIR / "degenerate-no-floor.json"))
        for record in w.results.records:
            w.results.set_checked(record.run_id, False)
        w.curves.log_sigma.setChecked(True)
        w.side_tabs.setCurrentWidget(w.latent_view)
        run(w)
        shoot(w.centralWidget(), out / "ex2-degenerate.png")

        # Exercise 2, step 4: importance sampling on m = 2 data, its draws over the exact posterior's heatmap
        w.load_preset(str(PRESET_DIR / "sigmoid-n3m2.json"))
        combo.setCurrentIndex(combo.findData("mle-importance"))
        w.training_panel.training_form.fields["steps"].spin.setValue(600)
        run(w)
        shoot_posterior(w, out / "ex2-importance-m2.png")
        w.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.exit(main(sys.argv[1:]))
