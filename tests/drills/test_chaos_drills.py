"""Every chaos drill in its short form, run with the command its playbook shows.

Each drill starts its own servers and service, breaks one thing under load and checks the
history: the test fails on any acknowledged event lost or stored twice, a broken chain, a
hypothesis that did not hold, or a recovery slower than 30 s.
"""

from __future__ import annotations

import pytest

from chaos.report import DRILLS, parse_report
from tests.docs.blocks import REPO_ROOT, docs_block, run_bash_block

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# The block each playbook shows under "Drill" (an id per page, so each is named here).
DRILL_BLOCKS = {
    "postgres-kill": "postgres-kill-drill",
    "postgres-freeze": "postgres-freeze-drill",
    "postgres-connections": "postgres-connections-drill",
    "valkey-kill": "valkey-kill-drill",
    "valkey-oom": "valkey-oom-drill",
    "worker-kill": "worker-kill-drill",
    "api-kill": "api-kill-drill",
    "pgbouncer": "pgbouncer-drill",
    "clock-skew": "clock-skew-drill",
}


def test_every_drill_has_its_block() -> None:
    assert sorted(DRILL_BLOCKS) == sorted(DRILLS)


@pytest.mark.parametrize("drill", DRILLS)
def test_drill_loses_nothing_and_recovers(drill: str) -> None:
    page, block = f"playbooks/{drill}.md", DRILL_BLOCKS[drill]
    command = docs_block(page, block)
    assert f"auditkit drill chaos {drill} " in command
    out = REPO_ROOT / ".auditkit" / "drills" / drill
    (out / "report.md").unlink(missing_ok=True)
    done = run_bash_block(page, block, timeout=420)
    report = (out / "report.md").read_text(encoding="utf-8")
    _, [row] = parse_report(report)
    assert row.drill == drill
    assert row.lost == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert row.duplicates == 0, done.stdout[-3000:]
    assert row.chain_valid, done.stdout[-3000:]
    assert row.acknowledged > 50
    assert row.stored >= row.acknowledged
    assert row.first_success_s is not None and 0 <= row.first_success_s <= 30
    assert row.p99_s is not None and 0 <= row.p99_s <= 30
    assert row.passed and row.status == "completed", report
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "journals" / f"{drill}.json").is_file()
