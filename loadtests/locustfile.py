"""The load drills' Locust file: the scenarios, their options and their thresholds.

Pick a scenario by its user class, and run headless so that the thresholds decide the exit
code (see `loadtests/drill.py`, which starts a service and runs each drill with its shape):

    locust -f loadtests/locustfile.py --headless -u 100 -r 100 -t 60s \
        --host http://127.0.0.1:8000 --csv out/sustained --html out/sustained.html \
        SustainedIngest

with the API keys in `AUDITKIT_LOAD_API_KEYS`.
"""

from loadtests.scenarios.batch import BatchIngest
from loadtests.scenarios.burst import BurstIngest
from loadtests.scenarios.queries import QueryMix
from loadtests.scenarios.soak import MemorySampler, SoakIngest
from loadtests.scenarios.stress import DatabaseStress
from loadtests.scenarios.sustained import SustainedIngest

__all__ = [
    "BatchIngest",
    "BurstIngest",
    "DatabaseStress",
    "MemorySampler",
    "QueryMix",
    "SoakIngest",
    "SustainedIngest",
]
