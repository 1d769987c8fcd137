"""How far a sync has got, as a person sees it: bars on a terminal, log events elsewhere.

The engine reports through `orgsync.core.ports.RunProgress` and knows nothing of terminals;
this module is the only one that imports rich. Everything here writes to stderr, never to
stdout, so `--json` output and pipes stay clean:
- `ProgressBars` (stderr is a terminal): one rich bar per phase (read source, read each
  target, apply) with counts, rate, elapsed time and, once the total is known, the ETA;
  a sync's plan is shown (through `show_plan`) before its first call.
- `ProgressEvents` (stderr is not a terminal: journald, CI logs): one structlog event
  `progress` per phase start and end, and while a phase runs one every `interval`
  seconds and at every `step` of its total.
`quiet_stdout` keeps stdout back for `--quiet`.

Neither reporter may slow the apply: an advance is a counter under a lock; drawing
happens on rich's refresh thread (4 times a second) and log lines written meanwhile are
printed above the bars by one thread in batches; events are written once per step.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from orgsync.core.plan import Plan
from orgsync.core.ports import APPLY, READ_SOURCE, READ_TARGET, RunProgress

log = structlog.get_logger(__name__)

_UNITS_WHILE_RUNNING = {READ_SOURCE: "", READ_TARGET: "requests", APPLY: "operations"}


def _title(phase: str, target: str | None) -> str:
    return f"{phase} {target}" if target else phase


class _Count(ProgressColumn):
    """`37/1,500 operations` once the total is known, `12 requests` before."""

    def render(self, task: Task) -> Text:
        if task.fields.get("final"):
            return Text("")
        unit = task.fields.get("unit", "")
        done = int(task.completed)
        if task.total is None:
            return Text(f"{done:,} {unit}".rstrip() if unit or done else "")
        return Text(f"{done:,}/{int(task.total):,} {unit}".rstrip())


class _Rate(ProgressColumn):
    """Items per second over the phase so far (steadier than rich's sliding window)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if task.fields.get("final") or not task.completed or elapsed <= 0:
            return Text("")
        return Text(f"{task.completed / elapsed:,.1f}/s")


class _KeptLines:
    """`sys.stderr` while bars show: what is written (log lines) is kept, and printed
    above the bars in batches.

    rich's own redirection redraws the bars for every line, on the writing thread, under
    the console's lock: a log line per operation then serialises the apply's workers on
    terminal output and doubles its time (bench/apply_calls.py ... bars).
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self._kept: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._kept.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def take(self) -> str:
        with self._lock:
            text, self._kept = "".join(self._kept), []
        return text

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...
        return getattr(self._real, name)


class _Reporter:
    """A `RunProgress` with one background thread (started on first use), which `close`
    ends; leaving a `with` block closes it."""

    def __init__(self) -> None:
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, work: Callable[[], None]) -> None:
        """Run `work` on the thread; it returns once `_closed` is set."""
        self._thread = threading.Thread(target=work, name="progress", daemon=True)
        self._thread.start()

    def _finish(self) -> None:
        """What is left to do once the thread has ended."""

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        self._finish()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProgressBars(_Reporter):
    """`RunProgress` on a terminal (stderr). Use as a context manager: the bars stop on exit."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        show_plan: Callable[[Plan], None] | None = None,
        batch_seconds: float = 0.25,
    ) -> None:
        super().__init__()
        # Bound to the real stderr now: later sys.stderr is the line keeper.
        self._console = console or Console(file=sys.stderr)
        self._show_plan = show_plan
        self._batch = batch_seconds
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[tuple[str, str | None], TaskID] = {}
        self._lines: _KeptLines | None = None

    def _keep_lines(self) -> None:
        """From the first bar on, stderr writes are kept and printed by one thread."""
        if self._lines is not None:
            return
        self._lines = _KeptLines(sys.stderr)
        sys.stderr = self._lines
        self._start(self._print_lines)

    def _print_lines(self) -> None:
        while not self._closed.wait(self._batch):
            with self._lock:
                self._print_kept()

    def _print_kept(self) -> None:
        text = self._lines.take() if self._lines is not None else ""
        if text:
            self._console.print(Text(text.rstrip("\n")), soft_wrap=True)

    def _bars(self) -> Progress:
        self._keep_lines()
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("{task.description}"),
                BarColumn(),
                _Count(),
                _Rate(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self._console,
                redirect_stderr=False,  # `_KeptLines` does it, cheaply
                # A redraw costs a few ms of CPU (and the GIL): 4 a second, not rich's 10,
                # keep the apply's threads from waiting on it.
                refresh_per_second=4,
            )
            self._progress.start()
        return self._progress

    def begin(self, phase: str, target: str | None, total: int | None) -> None:
        with self._lock:
            bars = self._bars()
            self._tasks[(phase, target)] = bars.add_task(
                _title(phase, target), total=total, unit=_UNITS_WHILE_RUNNING.get(phase, "")
            )

    def advance(self, phase: str, target: str | None) -> None:
        task = self._tasks.get((phase, target))
        progress = self._progress
        if task is not None and progress is not None:
            progress.advance(task)

    def end(self, phase: str, target: str | None, count: int, unit: str) -> None:
        with self._lock:
            task = self._tasks.pop((phase, target), None)
            if task is None or self._progress is None:
                return
            done = int(self._progress.tasks[task].completed)
            said = f"{_title(phase, target)}: {count:,} {unit}"
            if phase == READ_TARGET:
                said += f" ({done:,} requests)"
            self._progress.update(
                task, description=said, total=max(done, 1), completed=max(done, 1), final=True
            )

    def planned(self, plan: Plan) -> None:
        """Stop the bars, show the plan, and let the apply's bar start below it."""
        if self._show_plan is None:
            return
        with self._lock:
            self._print_kept()
            self._stop()
            self._show_plan(plan)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def _finish(self) -> None:
        """Stop the bars, print what is still kept, and give stderr back."""
        with self._lock:
            self._print_kept()
            self._stop()
            if self._lines is not None and sys.stderr is self._lines:
                sys.stderr = self._lines._real
            self._lines = None


@dataclass(slots=True)
class _Phase:
    phase: str
    target: str | None
    total: int | None
    started: float
    done: int = 0
    reported_at: float = 0.0
    next_step: int = 0
    """The count at which the next step event is due (0: no steps, total unknown)."""


class ProgressEvents(_Reporter):
    """`RunProgress` as structlog events on stderr, for logs read later (not a terminal)."""

    def __init__(
        self,
        *,
        interval: float = 5.0,
        step: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._step = step
        self._clock = clock
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str | None], _Phase] = {}

    def _step_size(self, total: int | None) -> int:
        return max(1, int(total * self._step)) if total else 0

    def begin(self, phase: str, target: str | None, total: int | None) -> None:
        now = self._clock()
        state = _Phase(phase, target, total, now, reported_at=now, next_step=self._step_size(total))
        with self._lock:
            self._phases[(phase, target)] = state
            if self._thread is None:
                self._start(self._tick)
        log.info("progress", phase=phase, target=target, state="started", total=total)

    def advance(self, phase: str, target: str | None) -> None:
        with self._lock:
            state = self._phases.get((phase, target))
            if state is None:
                return
            state.done += 1
            if not state.next_step or state.done < state.next_step or state.done == state.total:
                return  # the last one is reported by `end`
            state.next_step += self._step_size(state.total)
            fields = self._fields(state, self._clock())
        log.info("progress", **fields)

    def end(self, phase: str, target: str | None, count: int, unit: str) -> None:
        with self._lock:
            state = self._phases.pop((phase, target), None)
        seconds = round(self._clock() - state.started, 1) if state is not None else None
        log.info(
            "progress",
            phase=phase,
            target=target,
            state="finished",
            count=count,
            unit=unit,
            seconds=seconds,
        )

    def planned(self, plan: Plan) -> None:
        del plan  # the plan is printed with the result; these are log lines

    def _fields(self, state: _Phase, now: float) -> dict[str, object]:
        state.reported_at = now
        elapsed = max(now - state.started, 1e-9)
        fields: dict[str, object] = {
            "phase": state.phase,
            "target": state.target,
            "state": "running",
            "done": state.done,
            "total": state.total,
            "seconds": round(elapsed, 1),
        }
        if state.done:
            rate = state.done / elapsed
            fields["rate_per_second"] = round(rate, 1)
            if state.total:
                fields["percent"] = round(100 * state.done / state.total)
                fields["eta_seconds"] = round((state.total - state.done) / rate, 1)
        return fields

    def _tick(self) -> None:
        """Every `interval`, a line for each phase nothing was said about meanwhile."""
        while not self._closed.wait(min(self._interval, 1.0)):
            now = self._clock()
            with self._lock:
                due = [
                    self._fields(state, now)
                    for state in self._phases.values()
                    if now - state.reported_at >= self._interval
                ]
            for fields in due:
                log.info("progress", **fields)


if TYPE_CHECKING:  # mypy proves both satisfy the engine's protocol
    _BARS: RunProgress = ProgressBars()
    _EVENTS: RunProgress = ProgressEvents()


class Quiet:
    """`--quiet`: what would have gone to stdout, kept back; shown on stderr only when the
    run failed or a guard held operations (exit 1 or 3), so a cron job's mail says why."""

    def __init__(self, kept: io.StringIO) -> None:
        self._kept = kept

    def ended(self, code: int) -> int:
        if code in (1, 3) and self._kept.getvalue():
            sys.stderr.write(self._kept.getvalue())
            sys.stderr.flush()
        return code


@contextmanager
def quiet_stdout() -> Iterator[Quiet]:
    kept = io.StringIO()
    with redirect_stdout(kept):
        yield Quiet(kept)


def reporter(
    *, quiet: bool, show_plan: Callable[[Plan], None] | None
) -> ProgressBars | ProgressEvents | None:
    """Bars when stderr is a terminal, events otherwise, nothing with --quiet."""
    if quiet:
        return None
    if sys.stderr.isatty():
        return ProgressBars(show_plan=show_plan)
    return ProgressEvents()
