"""Server calls off the GUI thread, their results applied on it (standard library only).

Slicer's GUI, its MRML scene and VTK objects belong to the main thread. A
:class:`Worker` runs the slow part of an action (the HTTP calls) on a
background thread and hands the outcome back to the main thread, where the
action's ``apply`` step changes the scene and its ``done`` step updates the
panel. The hand-over happens in :meth:`Worker.poll`, which the main thread
calls: in Slicer a ``QTimer`` of the panel calls it every few tens of
milliseconds while a task runs; a script or a test calls :meth:`Worker.wait`,
which polls until the task is over (a GUI loop without the GUI).

One task at a time per worker. :meth:`Worker.cancel` abandons the running task
at once: its ``abort`` callable is called (closing its connections, so the
thread ends soon), nothing it returns is applied, and the worker takes a new
task immediately.
"""

import queue
import threading
import time

__all__ = ["WorkerBusy", "Task", "Worker"]


class WorkerBusy(RuntimeError):
    """A task was submitted while another one still runs."""


class Task:
    """One action: ``work`` on the background thread, ``apply`` / ``done`` / ``failed`` on the main thread.

    Attributes:
        name: what the panel shows ("Running LoRIS").
        started: ``time.monotonic()`` at submission.
        step: the last progress text the work reported (e.g. "Uploading the image").
        cancelled: set by :meth:`Worker.cancel`.
    """

    def __init__(self, name, work, apply=None, done=None, failed=None, abort=None, progress=None):
        self.name = name
        self.work = work
        self.apply = apply
        self.done = done
        self.failed = failed
        self.abort = abort
        self.progress = progress
        self.started = time.monotonic()
        self.step = ""
        self.cancelled = False
        self.thread = None

    def elapsed(self):
        """Seconds since the task was submitted."""
        return time.monotonic() - self.started


class Worker:
    """Runs one :class:`Task` at a time on a background thread; see the module docstring."""

    def __init__(self, name="LoRIS worker"):
        self.name = name
        self._events = queue.Queue()
        self._current = None

    @property
    def busy(self):
        """True while a task runs (its thread has not been handed back by :meth:`poll`)."""
        return self._current is not None

    @property
    def current(self):
        """The running :class:`Task`, or None."""
        return self._current

    def submit(self, name, work, apply=None, done=None, failed=None, abort=None, progress=None):
        """Start a task; returns it.

        Args:
            name: what the task does, for the panel.
            work: ``work(report)`` runs on the background thread; ``report(text)`` announces a step.
                Its return value goes to ``apply``. It must not touch the scene or any widget.
            apply: ``apply(value)`` runs on the main thread (in :meth:`poll`) and may change the
                scene; its return value goes to ``done`` (without ``apply``, ``value`` does).
            done: ``done(result)`` on the main thread after ``apply``.
            failed: ``failed(exception)`` on the main thread when ``work`` or ``apply`` raised.
            abort: called by :meth:`cancel` (from the main thread) to stop ``work`` early.
            progress: ``progress(task)`` on the main thread when the work reported a step.

        Raises:
            WorkerBusy: another task is still running.
        """
        if self._current is not None:
            raise WorkerBusy(f"'{self._current.name}' is still running; wait for it or cancel it")
        task = Task(name, work, apply, done, failed, abort, progress)
        self._current = task
        task.thread = threading.Thread(target=self._run, args=(task,), name=f"{self.name}: {name}", daemon=True)
        task.thread.start()
        return task

    def _run(self, task):
        def report(text):
            self._events.put(("step", task, str(text)))

        try:
            value = task.work(report)
        except BaseException as exc:  # handed to the main thread, which decides what to show
            self._events.put(("failed", task, exc))
        else:
            self._events.put(("finished", task, value))

    def poll(self):
        """Hand finished work to the main thread: run ``apply`` and ``done`` (or ``failed``). Main thread only.

        Returns:
            the number of events handled (0 when nothing happened since the last call).
        """
        handled = 0
        while True:
            try:
                kind, task, payload = self._events.get_nowait()
            except queue.Empty:
                return handled
            handled += 1
            if task.cancelled:
                continue
            if kind == "step":
                task.step = payload
                if task.progress is not None:
                    task.progress(task)
                continue
            if task is self._current:
                self._current = None
            error = payload if kind == "failed" else None
            result = None
            if error is None:
                try:
                    result = task.apply(payload) if task.apply is not None else payload
                except Exception as exc:
                    error = exc
            if error is not None:
                if task.failed is not None:
                    task.failed(error)
                elif not isinstance(error, Exception):
                    raise error
            elif task.done is not None:
                task.done(result)

    def cancel(self):
        """Abandon the running task (main thread): abort its work, apply nothing; True when one was running."""
        task = self._current
        if task is None:
            return False
        task.cancelled = True
        self._current = None
        if task.abort is not None:
            task.abort()
        return True

    def wait(self, timeout=None, interval=0.01):
        """Poll until no task runs (the main thread's loop when there is no GUI loop).

        Raises:
            TimeoutError: the task still runs after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self._current is None:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"'{self._current.name}' still runs after {timeout:.0f} s")
            time.sleep(interval)
