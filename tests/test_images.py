"""images.preflight: an offline rig's images must be shippable before apply touches a host."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from provisioner import images
from provisioner.diagnostics import Severity
from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "lab-cpu-containers.yaml"
IMAGE = "rigctl/llama.cpp-cpu:0.3.36-lab"
CONFIG = "0123abcd" * 8


def write_archive(path: Path, tags: list[str], oci: bool = False) -> None:
    """A minimal `docker save` archive: manifest.json and the config blob it names."""
    config = f"blobs/sha256/{CONFIG}" if oci else f"{CONFIG}.json"
    manifest = json.dumps([{"Config": config, "RepoTags": tags, "Layers": []}]).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", manifest), (config, b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def offline_rig(tmp_path: Path, image: str = IMAGE):
    spec = tmp_path / "rig.yaml"
    spec.write_text(SPEC.read_text().replace(IMAGE, image).replace("/var/tmp/rigctl-lab-cache/images", "images"))
    prep = prepare(str(spec))
    assert prep.plan is not None
    return prep


@pytest.fixture(autouse=True)
def no_local_engine(monkeypatch):
    monkeypatch.setattr(images, "_local_engine", lambda: None)


@pytest.mark.parametrize("oci", [False, True], ids=["legacy", "oci"])
def test_read_archive_gives_tags_and_image_id(tmp_path, oci):
    write_archive(tmp_path / "a.tar", [IMAGE], oci=oci)
    info = images.read_archive(tmp_path / "a.tar")
    assert info.tags == (IMAGE,) and info.image_ids == (f"sha256:{CONFIG}",)


def test_archived_image_passes(tmp_path):
    prep = offline_rig(tmp_path)
    write_archive(tmp_path / "images" / "rigctl_llama.cpp-cpu_0.3.36-lab.tar", [IMAGE])
    assert images.preflight(prep.plan, prep.ctx.rig, tmp_path) == []


def test_missing_image_is_an_error_naming_it(tmp_path):
    prep = offline_rig(tmp_path, "rigctl/not-built:1")
    (d,) = images.preflight(prep.plan, prep.ctx.rig, tmp_path)
    assert d.severity is Severity.error and d.rule == "image-offline[missing]"
    assert "image rigctl/not-built:1 is needed" in d.message and "rigctl_not-built_1.tar" in d.message
    assert d.hint.startswith("build or pull it") and "docker save rigctl/not-built:1 -o" in d.hint


def test_archive_of_another_image_does_not_count(tmp_path):
    prep = offline_rig(tmp_path)
    write_archive(tmp_path / "images" / "rigctl_llama.cpp-cpu_0.3.36-lab.tar", ["rigctl/other:2"])
    (d,) = images.preflight(prep.plan, prep.ctx.rig, tmp_path)
    assert d.severity is Severity.error and "holds other images" in d.message


class StubEngine:
    """Stands in for this machine's Docker engine (the real one is used by the lab tests)."""

    class images:
        @staticmethod
        def get(ref):
            if ref != IMAGE:
                raise LookupError(ref)
            return StubEngine.Image()

    class Image:
        @staticmethod
        def save(named):
            buf = io.BytesIO()
            write_archive_to(buf, [named])
            yield buf.getvalue()


def write_archive_to(buf, tags):
    manifest = json.dumps([{"Config": f"{CONFIG}.json", "RepoTags": tags, "Layers": []}]).encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))


def test_image_only_in_the_local_engine_is_exported(tmp_path):
    prep = offline_rig(tmp_path)
    (d,) = images.preflight(prep.plan, prep.ctx.rig, tmp_path, engine=StubEngine)
    assert d.severity is Severity.info and d.rule == "image-offline[export]"
    (written,) = images.export_images(prep.plan, prep.ctx.rig, tmp_path, engine=StubEngine)
    assert images.read_archive(written).tags == (IMAGE,)
    assert images.preflight(prep.plan, prep.ctx.rig, tmp_path, engine=StubEngine) == []


def test_registry_rigs_need_no_archives():
    prep = prepare(str(ROOT / "examples" / "multinode-vllm.yaml"))
    assert images.preflight(prep.plan, prep.ctx.rig) == []
