"""A stand-in training job for the tmux test: writes steps, epochs and evals of one running job
through the RegistrySink (as the runner's job process does), appends to its stdout.log and keeps
its heartbeat fresh.

    python live_writer.py DB_URL JOB_ID RUN_DIR EPOCHS SECONDS_PER_EPOCH
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from sqlalchemy import update

from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, utcnow
from ctxsim.registry.sink import RegistrySink
from ctxsim.train.events import Event


def main() -> None:
    url, job_id, run_dir, epochs, spe = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    reg = open_registry(url)
    sink = RegistrySink(reg, job_id, flush_every_s=0.2)
    log = open(run_dir / "stdout.log", "a", buffering=1)
    sink.emit(Event("start", {"epochs": epochs, "steps_per_epoch": 8, "start_epoch": 0}))
    step = 0
    for e in range(1, epochs + 1):
        for _ in range(8):
            step += 1
            loss = 1.5 * math.exp(-step / 15) + 0.2
            sink.emit(Event("step", {"epoch": e, "step": step, "loss": loss, "terms": {"ctx": 0.7 * loss, "con": 0.3 * loss}}))
            time.sleep(spe / 8)
        sink.emit(Event("epoch", {"epoch": e, "loss": loss, "seconds": spe}))
        sink.emit(Event("eval", {"epoch": e, "metrics": {"R@1": 0.5 + 0.05 * e, "MAP@R": 0.2 + 0.02 * e}}))
        log.write(f"epoch {e}/{epochs} loss {loss:.4f} R@1 {50 + 5 * e:.1f}\n")
        reg.run(lambda s: s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow())))
    sink.close()
    log.write("finished\n")


if __name__ == "__main__":
    main()
