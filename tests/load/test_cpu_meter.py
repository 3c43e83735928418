"""`CpuMeter` charges each part the CPU its whole process tree spent in the measurement."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from loadtests.bench.cpu import CpuMeter

# A process that burns `seconds` of its own CPU, then waits to be stopped.
BURN = """
import sys, time
seconds = float(sys.argv[1])
while time.process_time() < seconds:
    pass
print("done", flush=True)
time.sleep(60)
"""
# A process that starts a burner as its child, then burns as much itself.
PARENT = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {BURN!r}, sys.argv[1]], stdout=subprocess.PIPE)
while time.process_time() < float(sys.argv[1]):
    pass
child.stdout.readline()
print("done", flush=True)
time.sleep(60)
"""


def test_a_part_is_charged_for_its_children_and_the_rest_goes_elsewhere() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, "0.4"], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            meter = CpuMeter({"tree": lambda: proc.pid, "gone": lambda: None})
            meter.start()
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "done"  # both have burned their share
            time.sleep(0.1)
            spent = meter.stop()
        finally:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
    # Each of the two processes burned 0.4 s of its own CPU (the parent's start-up before
    # the first reading is not counted, hence the margin below 0.8 s).
    assert spent["tree"] >= 0.7
    assert spent["gone"] == 0.0
    assert spent["machine"] >= 0.9 * spent["tree"]
    # This process only waited for a line.
    assert spent["generator"] < spent["tree"] / 4
    per_event = meter.per_unit(1000)
    assert per_event["tree"] == round(spent["tree"] * 1e6 / 1000, 1)
    assert meter.per_unit(0) == {}


async def test_waiting_for_quiet_stops_at_a_quiet_window_or_at_the_timeout() -> None:
    from loadtests.bench.cpu import wait_until_quiet

    # No machine is busier than all of its cores: the first window is quiet.
    waited, busy = await wait_until_quiet(10_000, window_s=0.05, timeout_s=5)
    assert waited < 5 and busy < 10_000
    # Nor less busy than nothing: it gives up at the timeout and says how busy it was.
    waited, busy = await wait_until_quiet(-1, window_s=0.05, timeout_s=0.2)
    assert waited >= 0.2 and busy >= 0
