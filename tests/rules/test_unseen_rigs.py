"""Issue 13: verdicts on rigs the catalog does not describe (classes 1, 2 and 12).

Each test names the class it proves; each fails on the code before the change.
"""

from __future__ import annotations

from provisioner import sizing
from provisioner.rules.context import Context
from provisioner.spec.catalog import builtin
from provisioner.spec.loader import load_text

from tests.rules.test_cases import findings_for


def _ctx(spec: str) -> Context:
    res = load_text(spec, "case.yaml")
    assert res.rig is not None, [d.message for d in res.diagnostics]
    return Context(res.rig, builtin(), file="case.yaml")


MIXED_UNKNOWN = """\
version: 1
name: mixed
nodes:
  - name: box
    gpus: [{id: gpu0, model: rtx-3090}, {id: gpu1, model: rtx-9999-imaginary}]
serve:
  - name: llama70
    model: llama-3.1-70b
    format: Q4_K_M
    context_tokens: 8192
    stack: llamacpp
    placement: [{node: box}]
"""


def test_class1_an_unknown_card_stops_the_memory_verdict():
    """Before: the 70B was judged on the one known 3090 and got a false 'does not fit'."""
    mine, diags = findings_for("memory-fit", MIXED_UNKNOWN)
    assert [d.rule for d in diags if d.rule == "unknown-gpu"] == ["unknown-gpu"]
    assert mine == [], [d.message for d in mine]
    assert sizing.fit(_ctx(MIXED_UNKNOWN), _ctx(MIXED_UNKNOWN).rig.serve[0]) is None


INLINE = """\
version: 1
name: modded
gpu_models:
  - id: rtx-2080-ti-22gb
    name: RTX 2080 Ti 22GB (memory mod)
    vendor: nvidia
    architecture: turing
    memory_gib: 22
    bandwidth_gbs: 616
    memory_type: gddr6
    board_power_w: 250
    compute_capability: "7.5"
nodes:
  - name: box
    gpus: [{id: gpu0, model: rtx-2080-ti-22gb}, {id: gpu1, model: rtx-2080-ti-22gb}]
serve:
  - name: qwen
    model: qwen2.5-32b
    format: Q4_K_M
    context_tokens: 8192
    stack: llamacpp
    placement: [{node: box}]
"""


def test_class1_gpus_can_be_defined_inline_like_models():
    """Before: `gpu_models` was an unknown key and a card outside the catalog stopped the verdict."""
    _, diags = findings_for("memory-fit", INLINE)
    assert not [d for d in diags if d.rule in ("unknown-gpu", "memory-fit")], [d.message for d in diags]
    ctx = _ctx(INLINE)
    f = sizing.fit(ctx, ctx.rig.serve[0])
    assert f is not None and f.fits and len(f.devices) == 2
    assert f.devices[0].capacity_gib == 22 - 500 / 1024  # reserved_mib defaults to 500
    # too small a card is judged, not skipped
    mine, _ = findings_for("memory-fit", INLINE.replace("memory_gib: 22", "memory_gib: 8"))
    assert [d.rule for d in mine] == ["memory-fit[weights]"]


def test_class1_inline_gpu_is_validated_at_its_line():
    res = load_text(INLINE.replace("bandwidth_gbs: 616", "bandwidth_gbs: -1"), "case.yaml")
    assert res.rig is None
    bad = [res.locate(d) for d in res.diagnostics]
    assert bad and bad[0].location.line == 9, [(d.location.line, d.message) for d in bad]


MAC = """\
version: 1
name: mac
nodes:
  - name: studio
    os: macos
    memory_gib: {ram}
    gpus: [{{id: gpu0, model: apple-m2-max}}]
serve:
  - name: llama70
    model: llama-3.1-70b
    format: Q4_K_M
    context_tokens: 8192
    stack: llamacpp
    placement: [{{node: studio}}]
"""


def test_class2_a_mac_is_planned_with_its_own_memory():
    """Before: a 64 GB M2 Max was planned as the 96 GB configuration (72 GiB usable)."""
    ctx = _ctx(MAC.format(ram=64))
    f = sizing.fit(ctx, ctx.rig.serve[0])
    assert f.devices[0].capacity_gib == 64 * 0.75  # above 36 GB macOS wires about 3/4
    ctx = _ctx(MAC.format(ram=32))
    f = sizing.fit(ctx, ctx.rig.serve[0])
    assert abs(f.devices[0].capacity_gib - 32 * 2 / 3) < 1e-9  # up to 36 GB about 2/3
    mine, _ = findings_for("memory-fit", MAC.format(ram=32))
    assert [d.rule for d in mine] == ["memory-fit[weights]"], [d.message for d in mine]
    mine, _ = findings_for("memory-fit", MAC.format(ram=96))
    assert mine == [], [d.message for d in mine]


ORDER = """\
version: 1
name: duo
nodes:
  - name: box
    gpus: [{{id: gpu0, model: {first}}}, {{id: gpu1, model: {last}}}]
serve:
  - name: m
    model: llama-3.3-70b
    format: IQ2_XS
    stack: llamacpp
    context_tokens: 8192
    placement: [{{node: box}}]
"""


def test_class12_advise_and_plan_agree_on_two_cards_and_say_the_order_matters():
    """Before: advise sized the cards in catalog-id order, plan in spec order, and neither said so."""
    from provisioner.commands.advise import advise

    cat = builtin()
    rows = advise(cat, "llama-3.3-70b", ["IQ2_XS"], {"rtx-5090": 1, "rtx-3060-12gb": 1}, 2, 8192, "llamacpp", {})
    mixed = next(r for r in rows if r["gpu_count"] == 2)
    assert mixed["order"] is not None
    first, last = mixed["order"]
    plans = {}
    for a, b in ((first, last), (last, first)):
        ctx = _ctx(ORDER.format(first=a, last=b))
        plans[(a, b)] = sizing.fit(ctx, ctx.rig.serve[0])
    best, other = plans[(first, last)], plans[(last, first)]
    assert best.max_context_tokens == mixed["max_context_tokens"]
    assert best.max_context_tokens > other.max_context_tokens
    assert not any("GPU order matters" in n for n in best.notes)
    note = next(n for n in other.notes if "GPU order matters" in n)
    assert f"{best.max_context_tokens:,} tokens" in note and "gpu1, gpu0" in note


def test_class2_advise_sizes_a_mac_per_ram_configuration():
    from provisioner.commands.advise import advise

    rows = advise(builtin(), "llama-3.1-70b", ["Q4_K_M"], {"apple-m2-max": 1}, 1, 8192, "llamacpp", {})
    sizes = {r["gpus"]: r["fits"] for r in rows}
    assert sizes["1x apple-m2-max 96 GB"] and not sizes["1x apple-m2-max 32 GB"], sizes


FMT = """\
version: 1
name: fmt
nodes:
  - name: box
    gpus: [{{id: gpu0, model: rtx-4090}}]
serve:
  - name: m
    model: llama-3.1-8b
    format: {fmt}
    context_tokens: 8192
    stack: llamacpp
    placement: [{{node: box}}]
"""


def test_class1_gguf_legacy_types_and_l_xl_mixes_resolve_and_are_sized():
    """Before: Q5_0, Q5_1, Q4_1, Q2_K_L, Q3_K_XL... were unknown formats and stopped the verdict."""
    for fmt in ("Q5_0", "Q5_1", "Q4_1", "Q2_K_L", "Q3_K_XL", "Q4_K_L", "Q5_K_L", "Q6_K_L", "UD-Q4_K_XL"):
        _, diags = findings_for("unknown-format", FMT.format(fmt=fmt))
        assert not [d for d in diags if d.rule == "unknown-format"], fmt
    sizes = {}
    for fmt in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K", "Q6_K_L", "Q4_K_M", "Q4_K_L"):
        ctx = _ctx(FMT.format(fmt=fmt))
        sizes[fmt] = sizing.weights_gib(ctx, ctx.rig.serve[0])
    # the legacy blocks: 4.5, 5.0, 5.5, 6.0 bits per weight (ggml-common.h)
    assert sizes["Q4_0"] < sizes["Q4_1"] < sizes["Q5_0"] < sizes["Q5_1"]
    # _L keeps embeddings and output (2 x 128256 x 4096 of 8.03 B weights) at Q8_0
    share = 2 * 128256 * 4096 / 8.03e9
    for base, mix in (("Q6_K", "Q6_K_L"), ("Q4_K_M", "Q4_K_L")):
        bpw = sizes[base] * 8 * (1 << 30) / 8.03e9
        assert abs(sizes[mix] * 8 * (1 << 30) / 8.03e9 - (bpw + (8.5 - bpw) * share)) < 1e-6
    # a listed k-quant keeps its own entry; an unknown base stays unknown
    cat = builtin()
    assert cat.formats.get("Q3_K_L").id == "q3_k_l" and cat.formats.get("Q9_K_L") is None
