"""The shipped catalogs are valid, sourced and cover what the issue asks for."""

from pathlib import Path

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


# issue 13 class 1: the cards people own (GeForce 16 to 50 series, common data-center cards, every
# Apple chip, AMD Instinct)
OWNED = ["gtx-1650", "gtx-1650-super", "gtx-1660", "gtx-1660-super", "gtx-1660-ti",
         "rtx-2060", "rtx-2060-12gb", "rtx-2060-super", "rtx-2070", "rtx-2070-super", "rtx-2080", "rtx-2080-super",
         "rtx-2080-ti", "rtx-3060-12gb", "rtx-3060-ti", "rtx-3070", "rtx-3070-ti", "rtx-3080-10gb", "rtx-3080-12gb",
         "rtx-3080-ti", "rtx-3090", "rtx-3090-ti", "rtx-4060", "rtx-4060-ti-8gb", "rtx-4060-ti-16gb", "rtx-4070",
         "rtx-4070-super", "rtx-4070-ti", "rtx-4070-ti-super", "rtx-4080", "rtx-4080-super", "rtx-4090", "rtx-5060",
         "rtx-5060-ti-8gb", "rtx-5060-ti-16gb", "rtx-5070", "rtx-5070-ti", "rtx-5080", "rtx-5090",
         "tesla-t4", "tesla-p40", "v100-pcie-16gb", "v100-pcie-32gb", "v100-sxm2-32gb", "a10", "a10g", "l4", "a30",
         "a40", "l40", "h20", "mi210", "mi250-gcd", "mi300x",
         "apple-m1", "apple-m1-pro", "apple-m1-max", "apple-m1-ultra", "apple-m2", "apple-m2-pro", "apple-m2-max",
         "apple-m2-ultra", "apple-m3", "apple-m3-pro", "apple-m3-max", "apple-m3-ultra", "apple-m4", "apple-m4-pro",
         "apple-m4-max"]


def test_catalog_covers_the_cards_people_own():
    cat = builtin(validate=True)
    missing = [g for g in OWNED if cat.gpus.get(g) is None]
    assert not missing, missing
    for gid in OWNED:
        e = cat.gpus.get(gid)
        assert e.memory_type and e.bandwidth_gbs > 0 and "http" in e.source, gid
        if e.vendor == "nvidia":
            assert e.compute_capability and e.board_power_w, gid
        if e.vendor == "apple":
            # every RAM size the chip is sold with; memory_gib is the largest
            assert e.memory_options_gib and max(e.memory_options_gib) == e.memory_gib, gid
    # what users type resolves to the right variant
    assert cat.gpus.get("3080").memory_gib == 10 and cat.gpus.get("3080 12gb").memory_gib == 12
    assert cat.gpus.get("4060 ti 16gb").memory_gib == 16 and cat.gpus.get("RTX 4080").id == "rtx-4080"
    assert cat.gpus.get("5070 Ti").id == "rtx-5070-ti" and cat.gpus.get("Tesla T4").id == "tesla-t4"


def test_shipped_catalog_is_parsed_once_then_read_from_a_json_cache(tmp_path, monkeypatch):
    """Cold start: the YAML parse (~50 ms CPU) happens once; an edited file or a broken cache parses again."""
    import os
    import time

    from provisioner.spec import catalog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = tmp_path / "data"
    data.mkdir()
    src = Path(catalog.__file__).parent / "data"
    for kind in catalog.KINDS:
        (data / f"{kind}.yaml").write_text((src / f"{kind}.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    parsed = []
    real = catalog._load_yaml
    monkeypatch.setattr(catalog, "_load_yaml", lambda *a, **k: parsed.append(1) or real(*a, **k))
    first = catalog._shipped_items(data)
    assert len(parsed) == 4 and len(list((tmp_path / "rigctl").glob("catalog-*.json"))) == 1
    assert catalog._shipped_items(data) == first and len(parsed) == 4  # from the cache
    gpus = data / "gpus.yaml"
    gpus.write_text(gpus.read_text(encoding="utf-8").replace("name: NVIDIA GeForce RTX 3090\n",
                                                            "name: NVIDIA GeForce RTX 3090 (edited)\n"), encoding="utf-8")
    os.utime(gpus, ns=(time.time_ns(), time.time_ns() + 10**9))
    edited = catalog._shipped_items(data)
    assert len(parsed) == 8 and any(e["name"].endswith("(edited)") for e in edited["gpus"])
    for f in (tmp_path / "rigctl").glob("catalog-*.json"):
        f.write_text("{not json", encoding="utf-8")
    assert catalog._shipped_items(data) == edited and len(parsed) == 12


def test_the_builtin_catalog_is_loaded_once_per_process():
    # rules, plan and render all ask for it; each call must not read and build it again
    assert builtin() is builtin() and builtin(validate=True) is builtin(validate=True)
