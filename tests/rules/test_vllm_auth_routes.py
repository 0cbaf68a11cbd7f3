"""endpoint-auth[vllm-partial] names the routes vLLM really leaves open without the key.

vLLM's API-key middleware checks only paths under /v1 (vllm/entrypoints/openai/api_server.py);
/pause and /update_weights are not registered by default, /invocations, /tokenize and /metrics are.
"""

from __future__ import annotations

from provisioner.check import check_file


def test_vllm_partial_names_open_routes_only(root, tmp_path):
    src = (root / "examples" / "multinode-vllm.yaml").read_text()
    assert "auth:" not in src
    spec = tmp_path / "vllm-key.yaml"
    assert "    bind: 127.0.0.1\n" in src
    spec.write_text(src.replace("    bind: 127.0.0.1\n", "    bind: 0.0.0.0\n    auth: {env: VLLM_KEY}\n", 1))
    res = check_file(str(spec))
    msgs = [d.message for d in res.diagnostics if "vllm-partial" in (d.rule or "") or "--api-key protects" in d.message]
    assert msgs, [d.message for d in res.diagnostics]
    msg = msgs[0]
    for route in ("/invocations", "/tokenize", "/detokenize", "/metrics"):
        assert route in msg
    for absent in ("/pause", "/update_weights"):
        assert absent not in msg
