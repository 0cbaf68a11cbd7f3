"""llama.cpp RPC: `--tensor-split` and the plan's device table follow the engine's device order.

llama.cpp (src/llama.cpp, "add RPC servers at the front of the list", the build that
llama-cpp-python 0.3.36 vendors: https://github.com/ggml-org/llama.cpp/blob/0c1e57098/src/llama.cpp)
indexes `--tensor-split` over RPC devices first, in `--rpc` order, then the head's local GPUs.
On an uneven rig a head-first split puts the big share on the small card: an OOM.
"""

from __future__ import annotations

import textwrap

from provisioner.check import check_file
from provisioner.plan import build_plan

UNEVEN = """\
version: 1
name: uneven-rpc
fabric: {kind: ethernet, speed_gbps: 10, subnet: 10.0.0.0/24}
nodes:
  - name: big
    connection: {address: 192.168.1.30, ssh_user: rig}
    os: ubuntu-24.04
    memory_gib: 64
    gpus:
      - {id: gpu0, model: rtx-3090}
    nics:
      - {name: enp5s0, speed_gbps: 10, address: 10.0.0.11}
    storage:
      - {type: nvme, capacity_gb: 1000, mount: /models, models_dir: true}
%(workers)s
serve:
  - name: llm
    model: llama-3.1-8b
    format: Q8_0
    context_tokens: 8192
    stack: llamacpp-rpc
    placement:
      - {node: big}
%(placement)s
    bind: 127.0.0.1
"""

WORKER = """\
  - name: %(name)s
    connection: {address: 192.168.1.%(host)d, ssh_user: rig}
    os: ubuntu-24.04
    memory_gib: 32
    gpus:
%(gpus)s
    nics:
      - {name: enp5s0, speed_gbps: 10, address: 10.0.0.%(host)d}
    storage:
      - {type: nvme, capacity_gb: 1000, mount: /models, models_dir: true}
"""


def _spec(tmp_path, workers):
    """workers: [(name, host octet, [gpu models])] placed after the head `big` (24 GB)."""
    text = UNEVEN % {
        "workers": "".join(WORKER % {"name": n, "host": h, "gpus": "\n".join(
            f"      - {{id: gpu{i}, model: {m}}}" for i, m in enumerate(ms))} for n, h, ms in workers),
        "placement": "\n".join(f"      - {{node: {n}}}" for n, _, _ in workers),
    }
    path = tmp_path / "uneven.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _plan(path):
    res = check_file(str(path))
    assert res.errors == 0, [d.message for d in res.diagnostics]
    return build_plan(res.context).deployments[0]


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_split_starts_with_the_rpc_worker_share(tmp_path):
    dp = _plan(_spec(tmp_path, [("small", 12, ["rtx-3060-12gb"])]))
    head = next(s for s in dp.services if s.role == "server")
    split = [float(x) for x in _flag(head.argv, "--tensor-split").split(",")]
    small, big = dp.fit.devices
    # the engine's device 0 is the RPC worker: its (smaller) share comes first
    assert (small.node, big.node) == ("small", "big")
    assert split == [small.layers, big.layers]
    assert split[0] < split[1]
    # the 12 GB card must not be given the 24 GB card's share
    assert small.free_gib >= 0 and big.free_gib >= 0
    # the output layer sits on llama.cpp's last device: the head's local GPU
    assert big.holds_output and not small.holds_output


def test_several_workers_follow_rpc_address_order(tmp_path):
    dp = _plan(_spec(tmp_path, [("w1", 12, ["rtx-3060-12gb"]), ("w2", 13, ["rtx-3090", "rtx-3060-12gb"])]))
    head = next(s for s in dp.services if s.role == "server")
    rpc = _flag(head.argv, "--rpc").split(",")
    assert rpc == ["10.0.0.12:50052", "10.0.0.13:50052"]
    # rpc-server exposes its GPUs in order; RPC servers in --rpc order, then the head's GPUs
    assert [d.label for d in dp.fit.devices] == ["w1/gpu0", "w2/gpu0", "w2/gpu1", "big/gpu0"]
    split = _flag(head.argv, "--tensor-split").split(",")
    assert [float(x) for x in split] == [d.layers for d in dp.fit.devices]


def test_plan_table_lists_devices_in_engine_order(tmp_path, rigctl):
    code, out, err = rigctl("plan", _spec(tmp_path, [("small", 12, ["rtx-3060-12gb"])]))
    assert code == 0, err
    rows = [ln.split()[0] for ln in out.splitlines() if ln.strip().startswith(("small/", "big/"))]
    assert rows == ["small/gpu0", "big/gpu0"]
