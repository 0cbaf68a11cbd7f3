"""Users extend the catalogs with their own files (same schema; same id replaces)."""

from __future__ import annotations

SPEC = """version: 1
name: custom
catalog: [my-catalog.yaml]
nodes:
  - name: n1
    gpus:
      - {id: gpu0, model: rtx-pro-9000}
serve:
  - name: chat
    model: my-13b
    format: q4_k_m
    context_tokens: 8192
    stack: llamacpp
    placement: [{node: n1}]
"""

CATALOG = """gpus:
  - id: rtx-pro-9000
    name: Hypothetical RTX PRO 9000
    vendor: nvidia
    architecture: blackwell
    form_factor: pcie
    memory_gib: 8
    bandwidth_gbs: 1000
    board_power_w: 300
    source: "user measurement"
models:
  - id: my-13b
    name: My 13B
    architecture: llama
    params_b: 13
    layers: 40
    attention_heads: 40
    kv_heads: 40
    head_dim: 128
    vocab_size: 32000
    max_context: 16384
    source: "config.json of our fine-tune"
"""


def test_user_catalog_entries_are_used(tmp_path, rigctl):
    (tmp_path / "my-catalog.yaml").write_text(CATALOG)
    spec = tmp_path / "rig.yaml"
    spec.write_text(SPEC)
    rc, out, _ = rigctl("validate", spec)
    # 13B at ~4.9 bpw is ~7.4 GiB: with KV it overflows the user's 8 GiB card, which proves
    # both user entries were resolved and used by the memory rule
    assert "unknown" not in out
    assert "memory-fit" in out and "Hypothetical RTX PRO 9000" in out
    assert rc == 1


def test_bad_user_catalog_is_located(tmp_path, rigctl):
    (tmp_path / "my-catalog.yaml").write_text("gpus:\n  - id: x\n    name: X\n")
    spec = tmp_path / "rig.yaml"
    spec.write_text(SPEC)
    rc, out, _ = rigctl("validate", spec)
    assert rc == 1
    assert "my-catalog.yaml" in out and "catalog" in out


def test_only_and_skip(tmp_path, rigctl, root):
    pit = root / "examples/pitfalls/quad-3090-on-15a-circuit.yaml"
    rc, out, _ = rigctl("validate", pit, "--skip", "psu-headroom", "--skip", "wall-circuit")
    assert rc == 0, out
    rc, out, _ = rigctl("validate", pit, "--only", "power")
    assert "psu-headroom" in out and "wall-circuit" in out
