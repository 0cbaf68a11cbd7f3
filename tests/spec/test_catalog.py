"""The shipped catalogs are valid, sourced and cover what the issue asks for."""

from provisioner.spec.catalog import builtin

REQUIRED_GPUS = ["rtx-3060-12gb", "rtx-3090", "rtx-3090-ti", "rtx-4080-super", "rtx-4090", "rtx-5090", "rtx-a6000",
                 "rtx-6000-ada", "l40s", "a100-40gb-pcie", "a100-80gb-pcie", "a100-40gb-sxm", "a100-80gb-sxm",
                 "h100-pcie", "h100-sxm", "h100-nvl", "h200-sxm", "apple-m2-max", "apple-m2-ultra", "apple-m3-ultra"]
REQUIRED_MODELS = ["llama-3-8b", "llama-3-70b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.3-70b",
                   "qwen2.5-32b", "qwen2.5-72b", "deepseek-r1-distill-llama-70b", "llama-4-scout", "llama-4-maverick",
                   "mixtral-8x7b", "command-r-35b"]


def test_catalogs_validate_strictly():
    cat = builtin(validate=True)
    for table in (cat.gpus, cat.models, cat.formats, cat.cpus):
        assert len(table) > 5
        for e in table:
            assert e.source.strip(), f"{e.id} has no source"


def test_required_entries_present_and_consistent():
    cat = builtin(validate=True)
    for gid in REQUIRED_GPUS:
        assert cat.gpus.get(gid), gid
    for mid in REQUIRED_MODELS:
        assert cat.models.get(mid), mid
    # facts the rules depend on
    assert cat.gpus.get("rtx-3090").nvlink.present and cat.gpus.get("rtx-3090-ti").nvlink.present
    for no_nvlink in ("rtx-4090", "rtx-5090", "rtx-6000-ada", "l40s"):
        assert not cat.gpus.get(no_nvlink).nvlink.present, no_nvlink
    assert cat.gpus.get("apple-m2-ultra").usable_memory_fraction == 0.75
    assert cat.gpus.get("rtx-5090").open_kernel_modules_required
    assert cat.models.get("command-r-35b").kv_heads == cat.models.get("command-r-35b").attention_heads
    scout = cat.models.get("llama-4-scout")
    assert scout.active_b < scout.params_b / 5


def test_fast_and_validated_loads_agree():
    fast, slow = builtin(), builtin(validate=True)
    for kind in ("gpus", "models", "formats", "cpus"):
        a, b = getattr(fast, kind), getattr(slow, kind)
        assert {e.id: e.model_dump() for e in a} == {e.id: e.model_dump() for e in b}


def test_every_gpu_names_its_memory_type():
    """The speed model reads memory_type (kernels reach a different share of peak on GDDR, HBM, LPDDR)."""
    cat = builtin(validate=True)
    missing = [g.id for g in cat.gpus if g.memory_type is None]
    assert not missing, missing
    assert cat.gpus.get("rtx-4090").memory_type == "gddr6x"
    assert cat.gpus.get("h100-sxm").memory_type == "hbm3"
    assert cat.gpus.get("apple-m4-max").memory_type == "lpddr5x"
