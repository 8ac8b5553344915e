"""Workers (alive by heartbeat, their GPUs) and the queue, with cancel / retry / priority keys."""

from __future__ import annotations

import socket
from typing import Any, Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Label

from ctxsim.registry import queries
from ctxsim.registry.states import JobStatus
from ctxsim.tui.messages import QueueLoaded, RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.key_bar import KeyBar
from ctxsim.tui.widgets.queue_table import QueueTable
from ctxsim.tui.widgets.status_line import StatusLine
from ctxsim.tui.widgets.workers_table import WorkersTable, worker_state

RECENT_FINISHED = 10  # failed/cancelled jobs listed under the queue, for retry
_NVML = {"ready": None}  # None: not tried yet; False: no NVML / no GPU


def local_gpus() -> Optional[list[dict[str, Any]]]:
    """This machine's GPUs through NVML (nvidia-ml-py): index, utilisation %, memory used/total
    bytes; None when there is no NVIDIA driver or GPU (initialised once, in a thread)."""
    try:
        import pynvml
    except ImportError:
        return None
    if _NVML["ready"] is None:
        try:
            pynvml.nvmlInit()
            _NVML["ready"] = pynvml.nvmlDeviceGetCount() > 0
        except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded...
            _NVML["ready"] = False
    if not _NVML["ready"]:
        return None
    out = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append({"index": i, "util": pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
                        "used": mem.used, "total": mem.total})
    except Exception:  # noqa: BLE001 - a GPU fell off the bus: say no GPU rather than crash
        return None
    return out


def gpu_line(gpus: Optional[list[dict[str, Any]]], jobs_by_gpu: dict[str, int]) -> str:
    """``this machine: GPU0 35% 4.1/80 GiB job 2 · GPU1 …`` or ``this machine: no GPU (NVML unavailable)``."""
    if gpus is None:
        return "this machine: no GPU (NVML unavailable)"
    parts = []
    for g in gpus:
        job = jobs_by_gpu.get(str(g["index"]))
        parts.append(f"GPU{g['index']} {g['util']}% {g['used'] / 2**30:.1f}/{g['total'] / 2**30:.0f} GiB"
                     + (f" job {job}" if job is not None else " idle"))
    return "this machine: " + " · ".join(parts)


class QueueScreen(DashScreen):
    VIEW_NAME = "Queue and workers"
    HELP = ("Workers (alive by heartbeat, their GPUs: utilisation and memory where this machine can "
            "see them) and the queue: running jobs, queued ones in claim order, recent failures.")
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("enter", "open", "Detail", key_display="⏎"),
        Binding("plus,equals_sign", "priority(1)", "Prio +"),
        Binding("minus", "priority(-1)", "Prio -"),
        Binding("x", "cancel", "Cancel job"),
        Binding("r", "retry", "Retry"),
        Binding("n", "app.new_run", "New run"),
        Binding("tab", "focus_next", "Next table", show=False),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._summary = ""
        self._status: dict[int, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Workers", classes="section", id="workers-label")
        yield WorkersTable(id="workers")
        yield Label("Queue (running, queued by priority, recent failed/cancelled)", classes="section")
        yield QueueTable(id="queue")
        yield StatusLine()
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(QueueTable).focus()
        self.poll()

    def load(self) -> None:
        reg = self.dash.read_reg
        self.post_message(QueueLoaded(queries.workers_table(reg), queries.queue_table(reg, RECENT_FINISHED),
                                      self.dash.gpu_probe()))

    def on_queue_loaded(self, msg: QueueLoaded) -> None:
        now = self.dash.clock()
        stale = self.dash.stale_after_s
        self.query_one(WorkersTable).show(msg.workers, now, stale)
        self.query_one(QueueTable).show(msg.jobs)
        self._status = {j["id"]: j["status"] for j in msg.jobs}
        here = socket.gethostname()
        by_gpu = {g.strip(): j["id"] for j in msg.jobs if j["status"] == JobStatus.RUNNING and j.get("worker_host") == here
                  for g in (j.get("gpus") or "").split(",") if g.strip()}
        self.query_one("#workers-label", Label).update(f"Workers · {gpu_line(msg.gpus, by_gpu)}")
        states = [worker_state(w, now, stale) for w in msg.workers]
        queued = sum(j["status"] == JobStatus.QUEUED for j in msg.jobs)
        running = sum(j["status"] == JobStatus.RUNNING for j in msg.jobs)
        self._summary = (f"{states.count('alive')} alive, {states.count('dead')} dead workers · "
                         f"{running} running · {queued} queued")
        dead = [w["id"] for w, s in zip(msg.workers, states) if s == "dead"]
        self.set_warnings([f"worker {d} dead (no heartbeat)" for d in dead])

    def after_load(self, msg: RegistryStatus) -> None:
        self.status.set_info(" · ".join([self._summary, self.dash.label]))

    def _current(self):
        return self.query_one(QueueTable).current_id()

    def action_cancel(self) -> None:
        if (j := self._current()) is not None:
            self.dash.confirm_cancel(j, self._status.get(j))

    def action_retry(self) -> None:
        if (j := self._current()) is not None:
            self.dash.retry(j, self._status.get(j))

    def action_priority(self, delta: int) -> None:
        if (j := self._current()) is not None:
            self.dash.reprioritise(j, delta, self._status.get(j))

    def action_open(self) -> None:
        if (j := self._current()) is not None:
            self.dash.open_detail(j)

    def on_data_table_row_selected(self, event) -> None:  # - enter on a row opens it
        if isinstance(event.data_table, QueueTable):
            event.stop()
            self.dash.open_detail(int(event.row_key.value))
