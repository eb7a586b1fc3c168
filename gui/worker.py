"""The only module that touches QThread.

`EngineWorker` runs one engine task in a worker thread. A task is a callable
``task(report, should_stop) -> result`` (training: ``engine.runs.fit`` with `report` as its `on_progress`
and `should_stop` as its stop flag). Wiring:

    thread.started -> worker.run,  worker.ended -> thread.quit,  thread.finished -> thread.deleteLater

and the worker is deleted in the GUI thread once its thread has ended (`RunController._release`). Not with
`deleteLater` in its own thread, as superqt's ``new_worker_qthread`` does: Qt's destructor takes Qt's
signal-slot locks and then, through PySide, the GIL, while the GUI thread holding the GIL may be waiting
for one of those locks: a deadlock, the GUI thread in `QMetaObject::disconnect` and the worker thread in
`~QObject` waiting for the GIL (bench/RESULTS.md, "GUI and engine design measurements").

Signals of the worker (emitted in the worker thread):
    progress(object)   a progress record (engine/progress.py: the trainer sends at most 20 a second, each
                       with the `history_rows` since the previous one; gui/tasks.py's; `Paused`)
    finished(object)   the task's return value (a RunResult for training)
    failed(str, str)   message and traceback of an exception raised by the task
    ended()            always last (quits the thread); exactly one of finished and failed comes before it

`RunController` lives in the GUI thread, owns the thread and re-emits these signals, so only GUI-thread
QObjects receive them (a plain function connected to a worker-thread signal would run in the worker).
Stop, pause and step go through `threading.Event`s read in `should_stop`, which the engine calls before
every optimiser step; while paused, `should_stop` blocks.

A training run ends by scoring the fitted model on its held-out points (`engine.runs.fit` first reports
a `ScoringProgress`), and the engine calls `should_stop` between the chunks of that scoring too. There a
stop request ends the scoring (the trained run is returned), pause and step do nothing, and a stop that
ended the training is forgotten: Stop during training still scores the run; Stop again, or a stop with
`everything` (closing the window), ends the scoring as well. A series (Choose m) reports each run's phase
in its `SelectMProgress`: pause and step act in each run's training, not in its scoring, and a stop ends the
run in progress unscored and the series.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

from engine.progress import ScoringProgress

from .tasks import Paused, SelectMProgress, Task

DoneFn = Callable[[Any], None]


class EngineWorker(QObject):
    """Runs `task` once, in the thread it is moved to. See the module docstring."""

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    ended = Signal()

    def __init__(self, task: Task, *, paused: bool = False):
        super().__init__()
        self._task = task
        self._stop = threading.Event()
        self._go = threading.Event()  # cleared while paused
        if not paused:
            self._go.set()
        self._single_step = False
        self._steps_started = 0
        self._scoring = False  # the task reported a ScoringProgress: training is over
        self._stop_all = False  # a stop that ends the scoring too
        self._stop_lock = threading.Lock()

    # ------------------------------------------------------------ called from the GUI thread (thread-safe)
    def request_stop(self, *, everything: bool = False) -> None:
        """Stop training, or the scoring if it has begun; `everything`: both (see the module docstring)."""
        with self._stop_lock:
            self._stop_all = self._stop_all or everything
            self._stop.set()
        self._go.set()

    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def step_once(self) -> None:
        """Run one more step, then pause again."""
        self._single_step = True
        self._go.set()

    # ------------------------------------------------------------------------ runs in the worker thread
    @Slot()
    def run(self) -> None:
        try:
            result = self._task(self._report, self._should_stop)
        except BaseException as exc:  # reported, never raised in the worker thread
            self.failed.emit(str(exc) or type(exc).__name__, traceback.format_exc())
        else:
            self.finished.emit(result)
        finally:
            self.ended.emit()

    def _should_stop(self) -> bool:
        if self._scoring:  # neither paused nor counted
            return self._stop.is_set()
        if not self._go.is_set():
            self.progress.emit(Paused(self._steps_started))
            self._go.wait()
        if self._stop.is_set():
            return True
        if self._single_step:
            self._single_step = False
            self._go.clear()
        self._steps_started += 1
        return False

    def _report(self, info: Any) -> None:
        if isinstance(info, SelectMProgress):  # a series: each run trains (pausable, counted), then is scored
            self._scoring = info.scoring
            if info.step == 0 and not info.scoring:
                self._steps_started = 0
        elif isinstance(info, ScoringProgress) and not self._scoring:
            with self._stop_lock:  # the training has ended: a stop it answered is spent, a later one is not
                self._scoring = True
                if not self._stop_all and info.stop_answered:
                    self._stop.clear()
        self.progress.emit(info)  # its arrays are fresh copies (engine/progress.py)


class RunController(QObject):
    """Owns the worker thread (one task at a time) and re-emits the worker's signals in the GUI thread."""

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: EngineWorker | None = None
        self._kind = ""
        self._on_done: DoneFn | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    @property
    def kind(self) -> str:
        """What the current (or else the last) task is: "train", "generate", ..."""
        return self._kind

    def start(self, kind: str, task: Task, on_done: DoneFn | None = None, *, paused: bool = False) -> None:
        """Run `task` in a new worker thread; `on_done(result)` is called in the GUI thread."""
        if self.busy:
            raise RuntimeError(f"the worker is busy with {self._kind!r}")
        thread = QThread()
        worker = EngineWorker(task, paused=paused)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.progress.connect(self._on_progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.ended.connect(thread.quit)
        thread.finished.connect(thread.deleteLater)
        self._thread, self._worker, self._kind, self._on_done = thread, worker, kind, on_done
        self.busy_changed.emit(True)
        # Start the thread once the event loop has handled what is queued now (the repaint of the controls and
        # plots the caller just changed): a task starting at once would compete for the GIL with that repaint.
        QTimer.singleShot(0, thread, thread.start)

    def stop(self, *, everything: bool = False) -> None:
        """Ask the task to stop; a training run is still scored unless `everything` or the scoring has begun."""
        if self._worker is not None:
            self._worker.request_stop(everything=everything)

    def pause(self) -> None:
        if self._worker is not None:
            self._worker.pause()

    def resume(self) -> None:
        if self._worker is not None:
            self._worker.resume()

    def step_once(self) -> None:
        if self._worker is not None:
            self._worker.step_once()

    def shutdown(self) -> None:
        """Stop the task (a training run's scoring too) and wait for its thread, delivering its result (the
        run so far) first."""
        self.stop(everything=True)
        while self._thread is not None:
            self._thread.wait(50)
            QCoreApplication.processEvents()

    # ------------------------------------------------------------------------------ GUI-thread slots
    @Slot(object)
    def _on_progress(self, info: object) -> None:
        self.progress.emit(info)

    @Slot(object)
    def _on_finished(self, result: Any) -> None:
        on_done = self._on_done
        self._release()
        if on_done is not None:
            on_done(result)
        self.finished.emit(result)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self._release()
        self.failed.emit(message, details)

    def _release(self) -> None:
        """The task has returned: join its thread so the next task can start at once. Only the worker's one
        terminal signal (finished or failed) calls this, so a late signal of an old task never releases a
        newer one.

        Dropping the last reference to the worker deletes it, here in the GUI thread and only after `wait()`:
        its thread has ended, so nothing else can touch it (see the module docstring for why not in its
        own thread).
        """
        thread = self._thread
        if thread is None:
            return
        self._thread, self._on_done = None, None
        thread.quit()
        thread.wait()
        self._worker = None
        self.busy_changed.emit(False)
