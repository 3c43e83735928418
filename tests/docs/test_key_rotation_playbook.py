"""The Key rotation playbook's drill runs every step of the page and passes."""

from __future__ import annotations

import pytest

from tests.docs.blocks import run_bash_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_key_rotation_drill_passes() -> None:
    done = run_bash_block("playbooks/key-rotation.md", "kr-drill", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "drill passed"
    assert not [line for line in lines if line.strip().startswith("FAIL")]
    for promise in (
        "the revoked key is refused",
        "new events: sig-2027",
        "events of both keys verify",
        "encrypted fields still read after the rotation",
    ):
        assert any(promise in line for line in lines), promise
