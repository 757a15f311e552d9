"""zygote.py: the warm-up a warm jail runs before its first step."""

import json
import sys

import boot
import zygote
from stepwell import _progress


def test_the_zygotes_warm_up_runs_only_its_own_workflow_and_leaves_nothing_behind(capsys):
    modules = set(sys.modules)
    ran = []
    original = boot.outcome

    def outcome(job_bytes, channel=None, tenant=None):
        doc = original(job_bytes, channel, tenant)
        ran.append((tenant.__name__, json.loads(doc)))
        return doc

    boot.outcome = outcome
    try:
        zygote.warm_up(boot)
    finally:
        boot.outcome = original
    assert len(ran) == zygote.WARM_UP_RUNS
    assert {name for name, _ in ran} == {"stepwell_warm_up"}
    # Its second step ran for real: the runtime's whole path, result encoding included.
    assert ran[0][1]["ok"] and ran[0][1]["result"]["output"] == [1, {"x": 1}]
    assert _progress._sink is None
    assert set(sys.modules) - modules <= {"zygote", "json_codec"}  # the zygote imports both
    assert capsys.readouterr() == ("", "")
