"""provisioner.verify.enginelog: the engines' own load lines, parsed from recorded logs, against plans.

Fixtures (tests/verify/fixtures/, each labelled in its first lines):
- llamacpp-0.3.36-rpc.log / -cpu.log: real runs of the lab's llama-server (llama-cpp-python
  0.3.36's vendored llama.cpp 0c1e57098) on the tiny test GGUF at --log-verbosity 4.
- vllm-cpu-0.30.0.log: the load lines of a real vLLM 0.30.0 CPU run.
The vLLM GPU lines ("Model loading took", "Available KV cache memory") never ran here (no GPU):
those tests build the lines from vLLM 0.30.0's own format strings, named at each test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.sizing import Device, Fit
from provisioner.spec.models import Stack
from provisioner.verify import enginelog as el

FIX = Path(__file__).parent / "fixtures"


def read(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


def device(label, node, gpu_id=None, w_mib=0.0, kv_mib=0.0):
    return Device(label, node, gpu_id, ("nodes", 0), "x", 100.0, weights_gib=w_mib / 1024, kv_gib=kv_mib / 1024)


def fit(*devices, stack=Stack.llamacpp_rpc):
    return Fit("tiny", stack, "layer", list(devices), 1.0, 512, 1, "f16", 0.0, 512)


# ----------------------------------------------------------------- llama.cpp


def test_rpc_log_gives_each_device_its_buffers():
    m = el.parse_llamacpp(read("llamacpp-0.3.36-rpc.log"))
    assert m.engine == "llama.cpp"
    assert set(m.devices) == {"host", "RPC0[127.0.0.1:50599]"}
    rpc = m.devices["RPC0[127.0.0.1:50599]"]
    assert (rpc.weights_mib, rpc.kv_mib, rpc.compute_mib) == (0.38, 0.25, 1.63)
    host = m.devices["host"]  # CPU_Mapped token embeddings, the CPU compute buffer
    assert (host.weights_mib, host.kv_mib, host.compute_mib) == (0.06, 0.0, 0.76)


def test_cpu_log_puts_everything_in_host_memory():
    m = el.parse_llamacpp(read("llamacpp-0.3.36-cpu.log"))
    assert list(m.devices) == ["host"]
    h = m.devices["host"]
    assert (h.weights_mib, h.kv_mib, h.compute_mib) == (0.44, 0.5, 1.51)


def test_only_the_last_load_of_a_journal_counts():
    first = read("llamacpp-0.3.36-cpu.log")
    second = read("llamacpp-0.3.36-rpc.log")
    m = el.parse_llamacpp(first + "\n...restart...\n" + second)
    assert set(m.devices) == {"host", "RPC0[127.0.0.1:50599]"}
    assert m.devices["host"].weights_mib == 0.06  # not 0.44 + 0.06


def test_default_verbosity_log_has_no_buffer_lines():
    # what llama-server logs at its default -lv 3: libllama INFO is verbosity 4 (common/log.cpp)
    text = "\n".join(line for line in read("llamacpp-0.3.36-rpc.log").splitlines()
                     if " srv " in line or " cmn " in line)
    assert "buffer size" not in text
    assert el.parse_llamacpp(text) is None


@pytest.mark.parametrize("buf, key", [
    ("RPC1[10.0.0.12:50052]", "RPC1[10.0.0.12:50052]"), ("CUDA0", "CUDA0"), ("CUDA_Host", "host"),
    ("CPU_Mapped", "host"), ("CPU_REPACK", "host"), ("CPU", "host"), ("ROCm1", "ROCm1"), ("MTL0", "MTL0"),
    ("MTL0_Mapped", "MTL0"), ("Metal", "Metal0"), ("Vulkan_Host", "host"),
])
def test_buffer_names_map_to_devices(buf, key):
    assert el.device_key(buf) == key


def test_lab_plan_matches_the_engine_within_tolerance():
    m = el.parse_llamacpp(read("llamacpp-0.3.36-rpc.log"))
    f = fit(device("h2/cpu", "h2", w_mib=0.44, kv_mib=0.25))
    names = el.engine_names(f, "h1", {"h2": "127.0.0.1:50599"}, "llamacpp-rpc")
    assert names == ["RPC0[127.0.0.1:50599]"]
    rows = el.compare(f, m, names)
    assert [(r.device, r.off) for r in rows] == [("h2/cpu", []), ("host", [])]
    assert el.diagnostics("tiny", m, rows, ("serve", 0, "model"), "h1: log") == []
    t = el.table("tiny", m, rows)
    assert "h2/cpu  RPC0[127.0.0.1:50599]" in t and "not planned" in t and "ok" in t


def test_kv_off_by_more_than_the_floor_is_a_located_finding():
    m = el.parse_llamacpp(read("llamacpp-0.3.36-rpc.log"))
    f = fit(device("h2/cpu", "h2", w_mib=0.44, kv_mib=128.0))  # a model entry with 64x the head size
    rows = el.compare(f, m, el.engine_names(f, "h1", {"h2": "127.0.0.1:50599"}, "llamacpp-rpc"))
    assert rows[0].off == ["kv"]
    (d,) = el.diagnostics("tiny", m, rows, ("serve", 0, "model"), "h1: journalctl")
    assert d.rule == "verify-memory[h2/cpu]" and d.path == ("serve", 0, "model")
    assert d.severity.value == "error"
    assert "KV cache 0.25 MiB, planned 128 MiB (tolerance 64 MiB)" in d.message
    assert d.data["engine_kv_mib"] == 0.25 and d.data["plan_kv_mib"] == 128.0


def test_tolerance_is_a_quarter_with_a_64_mib_floor():
    assert el.tolerance_mib(0.4) == 64
    assert el.tolerance_mib(1000) == 250
    m = el.EngineMemory("llama.cpp", {"CUDA0": el.EngineDevice("CUDA0", 1240.0, 200.0, 300.0)})
    for planned, off in ((1000.0, []), (1250.0, []), (1300.0, []), (900.0, ["weights"])):
        f = fit(device("n/gpu0", "n", "gpu0", w_mib=planned, kv_mib=200.0), stack=Stack.llamacpp)
        assert el.compare(f, m, el.engine_names(f, "n", {}, "llamacpp"))[0].off == off, planned


def test_plan_device_missing_from_the_log_is_named():
    m = el.parse_llamacpp(read("llamacpp-0.3.36-rpc.log"))
    f = fit(device("h2/cpu", "h2", w_mib=0.44), device("h3/cpu", "h3", w_mib=0.1))
    rows = el.compare(f, m, el.engine_names(f, "h1", {"h2": "127.0.0.1:50599", "h3": "10.0.0.13:50052"},
                                            "llamacpp-rpc"))
    assert rows[1].off == ["missing"]
    (d,) = el.diagnostics("tiny", m, rows, ("serve", 0, "model"), "src")
    assert "no buffers on RPC0[10.0.0.13:50052]" in d.message


def test_local_gpus_of_the_head_follow_rpc_devices():
    # two rpc devices on h2 (RPC0/RPC1 of one server), then the head's own CUDA0, CUDA1
    lines = [f"load_tensors: {b} model buffer size = {w:8.2f} MiB" for b, w in
             (("RPC0[10.0.0.12:50052]", 100), ("RPC1[10.0.0.12:50052]", 110), ("CUDA0", 120),
              ("CUDA1", 130), ("CUDA_Host", 5))]
    m = el.parse_llamacpp("load_tensors: loading model tensors\n" + "\n".join(lines))
    f = fit(*(device(f"{n}/gpu{i}", n, f"gpu{i}", w_mib=w) for n, i, w in
              (("h2", 0, 100), ("h2", 1, 110), ("h1", 0, 120), ("h1", 1, 130))))
    names = el.engine_names(f, "h1", {"h2": "10.0.0.12:50052"}, "llamacpp-rpc")
    rows = el.compare(f, m, names)
    assert [r.engine_name for r in rows] == ["RPC0[10.0.0.12:50052]", "RPC1[10.0.0.12:50052]", "CUDA0", "CUDA1",
                                             "host"]
    assert all(not r.off for r in rows)


# ----------------------------------------------------------------- vLLM


def test_vllm_cpu_log_gives_the_kv_pool_and_tokens():
    m = el.parse_vllm(read("vllm-cpu-0.30.0.log"))
    assert m.engine == "vLLM" and m.kv_tokens == 65536
    (r,) = m.devices.values()
    assert r.name == "rank0" and r.kv_mib == pytest.approx(0.06 * 1024)
    assert r.weights_mib is None  # the CPU model runner prints no "Model loading took"


def test_vllm_gpu_ranks_from_worker_prefixes():
    # format strings of vLLM 0.30.0: "Model loading took %s GiB memory and %.6f seconds"
    # (v1/worker/gpu_model_runner.py), "Available KV cache memory: %s GiB" (v1/worker/gpu_worker.py),
    # worker names Worker_TP<i> (v1/executor/multiproc_executor.py); synthetic, not a recorded run
    text = "\n".join([
        "(EngineCore pid=10) INFO 12-02 00:53:53 [core.py:123] Initializing a V1 LLM engine (v0.30.0) with config",
        "(Worker_TP1 pid=12) INFO 12-02 00:55:48 [gpu_model_runner.py:5417] Model loading took 7.12 GiB memory "
        "and 3.000000 seconds",
        "(Worker_TP0 pid=11) INFO 12-02 00:55:48 [gpu_model_runner.py:5417] Model loading took 7.1 GiB memory "
        "and 3.000000 seconds",
        "(Worker_TP0 pid=11) INFO 12-02 00:55:58 [gpu_worker.py:641] Available KV cache memory: 10.5 GiB",
        "(Worker_TP1 pid=12) INFO 12-02 00:55:58 [gpu_worker.py:641] Available KV cache memory: 10.4 GiB",
        "(EngineCore pid=10) INFO 12-02 00:55:59 [kv_cache_utils.py:2395] GPU KV cache size: 171,264 tokens, "
        "Maximum concurrency for 8,192 tokens per request: 20.91x",
    ])
    m = el.parse_vllm(text)
    assert m.kv_tokens == 171264
    assert [(d.name, d.weights_mib, d.kv_mib) for d in m.devices.values()] == [
        ("rank0", pytest.approx(7.1 * 1024), pytest.approx(10.5 * 1024)),
        ("rank1", pytest.approx(7.12 * 1024), pytest.approx(10.4 * 1024))]
    # planned 7 GiB weights, 2 GiB KV per rank: ok (vLLM's bigger pool is its design)
    f = fit(device("n/gpu0", "n", "gpu0", 7 * 1024, 2048), device("n/gpu1", "n", "gpu1", 7 * 1024, 2048),
            stack=Stack.vllm)
    rows = el.compare(f, m, el.engine_names(f, "n", {}, "vllm"))
    assert [r.off for r in rows] == [[], []]
    # planned 4 GiB weights (a wrong parameter count) and 12 GiB KV: both off
    f = fit(device("n/gpu0", "n", "gpu0", 4 * 1024, 16 * 1024), device("n/gpu1", "n", "gpu1", 7 * 1024, 2048),
            stack=Stack.vllm)
    rows = el.compare(f, m, el.engine_names(f, "n", {}, "vllm"))
    assert [r.off for r in rows] == [["weights", "kv"], []]


def test_vllm_without_load_lines_is_none():
    assert el.parse_vllm("(APIServer pid=1) INFO starting\n") is None


# ----------------------------------------------------------------- the lab example's own plan


def _lab_plan(spec_text: str, tmp_path):
    from provisioner.check import check_file
    from provisioner.plan import build_plan

    spec = tmp_path / "rig.yaml"
    spec.write_text(spec_text)
    return build_plan(check_file(str(spec)).context)


LAB_SPEC = Path(__file__).resolve().parents[2] / "examples" / "lab-cpu-rpc.yaml"


def test_lab_plan_starts_llama_server_at_verbosity_4():
    # without it libllama's buffer lines never reach the journal (test_default_verbosity_log_...)
    plan = _lab_plan_from_example()
    head = next(s for s in plan.deployments[0].services if s.role == "server")
    i = head.argv.index("--log-verbosity")
    assert head.argv[i + 1] == "4"


def _lab_plan_from_example():
    from provisioner.check import check_file
    from provisioner.plan import build_plan

    return build_plan(check_file(str(LAB_SPEC)).context)


def test_lab_journal_against_the_lab_plan(tmp_path):
    """The recorded journal of the lab (net 10.223.0) against the example's plan on that net."""
    from provisioner.verify.memory_check import _rpc_endpoints

    plan = _lab_plan(LAB_SPEC.read_text().replace("10.213.0.", "10.223.0."), tmp_path)
    dp = plan.deployments[0]
    m = el.parse_llamacpp(read("llamacpp-0.3.36-lab-journal.log"))
    names = el.engine_names(dp.fit, "h1", _rpc_endpoints(dp), dp.stack)
    assert names == ["RPC0[10.223.0.12:50052]"]
    rows = el.compare(dp.fit, m, names)
    assert [(r.device, r.engine_name, r.off) for r in rows] == [("h2/cpu", "RPC0[10.223.0.12:50052]", []),
                                                                ("host", "host", [])]
    wrong = _lab_plan(LAB_SPEC.read_text().replace("10.213.0.", "10.223.0.").replace("head_dim: 16\n",
                                                                                      "head_dim: 8192\n"), tmp_path)
    rows = el.compare(wrong.deployments[0].fit, m, names)
    assert rows[0].off == ["kv"]


class _FakeSession:
    """Stands in for the SSH session only: answers run_python with a recorded journal."""

    def __init__(self, answer: dict):
        self.answer, self.calls = answer, []

    def run_python(self, name, code, args, **kw):
        self.calls.append((name, args))
        return self.answer


def _lab_ctx_plan():
    from provisioner.check import check_file
    from provisioner.plan import build_plan

    ctx = check_file(str(LAB_SPEC)).context
    return ctx, build_plan(ctx)


def _hosts():
    from provisioner.verify.inventory import InventoryHost

    return {n: InventoryHost(n, a, "root") for n, a in (("h1", "10.213.0.11"), ("h2", "10.213.0.12"))}


def test_check_memory_reads_the_head_unit_and_tables_it():
    from provisioner.verify.memory_check import check_memory

    ctx, plan = _lab_ctx_plan()
    text = read("llamacpp-0.3.36-lab-journal.log").replace("10.223.0.", "10.213.0.")
    s = _FakeSession({"text": text, "command": "journalctl ..."})
    rep = check_memory(ctx, plan, s, _hosts(), {}, set())
    assert s.calls == [("h1", {"unit": "rigctl-tiny", "mode": "native", "max_lines": 20000,
                               "log_dir": "/var/log/rigctl"})]
    assert rep.diagnostics == [] and "RPC0[10.213.0.12:50052]" in rep.tables[0]
    # a part of the deployment down (h2's rpc-server): not compared, that part has its finding
    assert check_memory(ctx, plan, _FakeSession({"text": text}), _hosts(), {}, {"h2"}).tables == []


def test_check_memory_warns_when_the_log_has_no_load_lines():
    from provisioner.verify.memory_check import check_memory

    ctx, plan = _lab_ctx_plan()
    rep = check_memory(ctx, plan, _FakeSession({"text": "0.00.027 I srv  llama_server: model loaded\n"}),
                       _hosts(), {}, set())
    (d,) = rep.diagnostics
    assert d.rule == "verify-engine-log[h1]" and d.severity.value == "warning" and d.path == ("serve", 0, "model")
    assert "--log-verbosity 4" in d.hint
    rep = check_memory(ctx, plan, _FakeSession({"error": "journalctl: not found"}), _hosts(), {}, set())
    assert [d.rule for d in rep.diagnostics] == ["verify-engine-log[h1]"]
