"""What `rigctl validate` loads at a cold start (issue 13: <= 0.3 s, bench/validate.py measures
it). These guard the two costs that were taken out: PyYAML (the shipped catalog is read from
its JSON copy) and a pydantic validator per nested spec model (defer_build: one for Rig)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from pydantic.plugin import _schema_validator as sv
built = []
real = sv.create_schema_validator
sv.create_schema_validator = lambda *a, **k: built.append(a[1].__name__ if len(a) > 1 else "?") or real(*a, **k)
import pydantic._internal._model_construction as mc
mc.create_schema_validator = sv.create_schema_validator
from provisioner.cli import main
try:
    main(["validate", sys.argv[1]])
except SystemExit:
    pass
print(json.dumps({"yaml": "yaml" in sys.modules, "validators": built}))
"""


def test_validate_reads_no_pyyaml_and_builds_one_spec_validator():
    main_ok = subprocess.run([sys.executable, "-m", "provisioner", "validate", str(ROOT / "examples" / "dual-4090.yaml")],
                             capture_output=True, text=True, cwd=ROOT)
    assert main_ok.returncode == 0, main_ok.stderr  # warms the catalog's JSON copy
    r = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "examples" / "dual-4090.yaml")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["yaml"] is False
    spec_models = [v for v in out["validators"] if v in {"Rig", "Node", "Gpu", "Deployment", "Psu", "ModelSource"}]
    assert spec_models == ["Rig"], out["validators"]
