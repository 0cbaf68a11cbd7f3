"""rigctl render owns its output directory: it never overwrites, deletes or writes through
anything it did not create, and an interrupted or concurrent render never leaves a mix."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.render import files as files_mod

ROOT = Path(__file__).resolve().parents[2]
LAB_SPEC = ROOT / "examples" / "lab-cpu-rpc.yaml"
RIGCTL = Path(sys.executable).parent / "rigctl"


def tree(top: Path) -> dict[str, str]:
    """Every entry under top (symlinks as their target, not followed) -> sha256 or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(top).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def renamed_spec(tmp_path) -> Path:
    """The lab rig with its service renamed: files/h1/rigctl-tiny.service etc. are no longer rendered."""
    spec = tmp_path / "renamed.yaml"
    text = LAB_SPEC.read_text()
    assert "  - name: tiny\n" in text
    spec.write_text(text.replace("  - name: tiny\n", "  - name: small\n"))
    return spec


def test_refuses_an_unrelated_non_empty_directory(rigctl, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    (out / "site.yml").write_text("- hosts: mine\n")
    code, stdout, err = rigctl("render", LAB_SPEC, "-o", out)
    assert code == 2
    assert "not rendered by rigctl" in err and "README.md" in err
    assert (out / "README.md").read_text() == "my notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "site.yml"]
    assert (out / "site.yml").read_text() == "- hosts: mine\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mine.rigctl-") and p.name != ".mine.rigctl-lock"]


def test_empty_output_argument_is_a_usage_error(rigctl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = rigctl("render", LAB_SPEC, "-o", "")
    assert code == 2 and "-o/--output" in err
    assert list(tmp_path.iterdir()) == [], "an empty -o rendered into the current directory"


def test_dot_in_a_non_rigctl_directory_is_refused(rigctl, tmp_path, monkeypatch):
    (tmp_path / "ansible.cfg").write_text("[defaults]\nmine = yes\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = rigctl("render", LAB_SPEC, "-o", ".")
    assert code == 2 and "not rendered by rigctl" in err
    assert [p.name for p in tmp_path.iterdir()] == ["ansible.cfg"]
    assert (tmp_path / "ansible.cfg").read_text() == "[defaults]\nmine = yes\n"


def test_an_empty_existing_directory_is_taken(rigctl, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    code, stdout, _ = rigctl("render", LAB_SPEC, "-o", out)
    assert code == 0 and "created   site.yml" in stdout
    assert (out / ".rigctl-render").is_file()


def test_rerender_into_its_own_directory_reports_unchanged_and_same_bytes(rigctl, tmp_path):
    out = tmp_path / "p"
    code, stdout, _ = rigctl("render", LAB_SPEC, "-o", out)
    assert code == 0
    first = tree(out)
    inode = (out / "site.yml").stat().st_ino
    code, stdout, _ = rigctl("render", LAB_SPEC, "-o", out)
    assert code == 0
    n = len(first) - sum(1 for p in first if (out / p).is_dir()) - 1  # minus directories and the marker
    assert stdout.strip().endswith(f"{n} files, 0 created, 0 changed, {n} unchanged")
    # the marker is deterministic too (rig, version, sha256 per file; no timestamps): the whole tree is identical
    assert tree(out) == first
    assert (out / "site.yml").stat().st_ino == inode, "an unchanged file was rewritten"


def test_a_directory_rendered_for_another_rig_is_refused(rigctl, tmp_path):
    out = tmp_path / "p"
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    before = tree(out)
    other = tmp_path / "other.yaml"
    other.write_text(LAB_SPEC.read_text().replace("name: lab-cpu-rpc", "name: other-rig"))
    code, _, err = rigctl("render", other, "-o", out)
    assert code == 2 and "rig 'lab-cpu-rpc', not 'other-rig'" in err
    assert tree(out) == before


def test_prune_deletes_only_rigctls_stale_files(rigctl, tmp_path, renamed_spec):
    out = tmp_path / "p"
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    (out / "roles" / "my-notes.md").write_text("mine\n")        # a user file inside a managed dir
    (out / "files" / "h2" / "extra.conf").write_text("mine\n")  # next to a file that goes stale
    (out / "local").mkdir()
    (out / "local" / "todo.txt").write_text("mine\n")
    # without --prune the stale files are reported and kept
    code, stdout, _ = rigctl("render", renamed_spec, "-o", out)
    assert code == 0
    assert "stale     files/h1/rigctl-tiny.service (no longer rendered; --prune deletes it)" in stdout
    assert "kept      local/ (not written by rigctl)" in stdout
    assert "kept      roles/my-notes.md (not written by rigctl)" in stdout
    assert (out / "files/h1/rigctl-tiny.service").is_file() and (out / "files/h1/rigctl-small.service").is_file()
    # a stale file the user edited since is not deleted either
    (out / "files/h2/rigctl-tiny-rpc.service").write_text("edited by hand\n")
    code, stdout, _ = rigctl("render", renamed_spec, "-o", out, "--prune")
    assert code == 0
    deleted = sorted(line.split()[1] for line in stdout.splitlines() if line.startswith("deleted"))
    assert deleted == ["files/h1/rigctl-tiny.service"]
    assert "kept      files/h2/rigctl-tiny-rpc.service (no longer rendered, but edited" in stdout
    assert not (out / "files/h1/rigctl-tiny.service").exists()
    assert (out / "files/h2/rigctl-tiny-rpc.service").read_text() == "edited by hand\n"
    for p in ("roles/my-notes.md", "files/h2/extra.conf", "local/todo.txt"):
        assert (out / p).read_text() == "mine\n", p
    # nothing left to prune: the edited file is the user's now
    code, stdout, _ = rigctl("render", renamed_spec, "-o", out, "--prune")
    assert code == 0 and "deleted" not in stdout and (out / "files/h2/rigctl-tiny-rpc.service").exists()


def test_a_symlinked_directory_rigctl_writes_into_is_refused_not_followed(rigctl, tmp_path):
    out, outside = tmp_path / "p", tmp_path / "outside"
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    outside.mkdir()
    (outside / "h1.yml").write_text("precious\n")
    (outside / "precious.txt").write_text("precious\n")
    for p in (out / "inventory" / "host_vars").iterdir():
        p.unlink()
    (out / "inventory" / "host_vars").rmdir()
    (out / "inventory" / "host_vars").symlink_to(outside)
    code, _, err = rigctl("render", LAB_SPEC, "-o", out, "--prune")
    assert code == 2 and "inventory/host_vars in the output directory is a symlink" in err
    assert sorted(p.name for p in outside.iterdir()) == ["h1.yml", "precious.txt"]
    assert (outside / "h1.yml").read_text() == "precious\n"
    assert (out / "inventory" / "host_vars").is_symlink()


def test_prune_does_not_follow_a_symlinked_stale_directory(rigctl, tmp_path):
    """With node h2 renamed h3, files/h2 holds only stale files; a symlink there is left alone by --prune."""
    out, outside = tmp_path / "p", tmp_path / "outside"
    moved = tmp_path / "moved.yaml"
    moved.write_text(LAB_SPEC.read_text().replace("h2", "h3"))
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    outside.mkdir()
    (outside / "rigctl-tiny.service").write_text("not rigctl's copy\n")
    (out / "files" / "h2" / "rigctl-tiny-rpc.service").unlink()
    (out / "files" / "h2").rmdir()
    (out / "files" / "h2").symlink_to(outside)
    (outside / "rigctl-tiny-rpc.service").write_text("not rigctl's copy\n")
    code, stdout, err = rigctl("render", moved, "-o", out, "--prune")
    assert code == 0, err
    assert "deleted   inventory/host_vars/h2.yml" in stdout
    assert "files/h2 is a symlink" in err and "not followed" in err
    assert (outside / "rigctl-tiny-rpc.service").read_text() == "not rigctl's copy\n"
    assert (outside / "rigctl-tiny.service").read_text() == "not rigctl's copy\n"
    assert os.readlink(out / "files" / "h2") == str(outside)


def test_a_second_render_fails_fast_while_the_lock_is_held(rigctl, tmp_path):
    out = tmp_path / "p"
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    before = tree(out)
    fd = os.open(tmp_path / ".p.rigctl-lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, _, err = rigctl("render", LAB_SPEC, "-o", out)
    finally:
        os.close(fd)
    assert code == 6 and "another process holds the lock" in err
    assert tree(out) == before


def test_concurrent_renders_serialize_or_fail_fast_and_leave_one_whole_tree(tmp_path, renamed_spec):
    out = tmp_path / "p"
    procs = [subprocess.Popen([str(RIGCTL), "render", str(s), "-o", str(out), "-q"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (LAB_SPEC, renamed_spec, LAB_SPEC)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code in (0, 6) for code, _ in results), results
    assert all("another process holds the lock" in err for code, err in results if code == 6)
    assert any(code == 0 for code, _ in results)
    # whichever ran last, the tree is whole: every file is the one its marker records (a mix of two
    # renders would not be), nothing else is there, and one spec's files are all present
    got = tree(out)
    marker = json.loads((out / ".rigctl-render").read_text())
    files = {k: v for k, v in got.items() if not (out / k).is_dir() and k != ".rigctl-render"}
    assert files == marker["files"]
    assert {"files/h1/rigctl-tiny.service", "files/h2/rigctl-tiny-rpc.service"} <= set(files) or \
        {"files/h1/rigctl-small.service", "files/h2/rigctl-small-rpc.service"} <= set(files)


def test_an_interrupted_render_leaves_the_old_tree_intact(rigctl, tmp_path, renamed_spec, monkeypatch):
    out = tmp_path / "p"
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    before = tree(out)
    real, calls = files_mod._write_file, []

    def dies_after_two(*a, **kw):  # unchanged files are hard-linked, so only 4 files and the marker are written
        calls.append(a[0])
        if len(calls) > 2:
            raise KeyboardInterrupt  # Ctrl-C halfway through writing the new tree
        return real(*a, **kw)

    monkeypatch.setattr(files_mod, "_write_file", dies_after_two)
    code, _, _ = rigctl("render", renamed_spec, "-o", out)
    assert len(calls) == 3 and code == 130
    assert tree(out) == before, "the interrupted render left a mix"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".p.")) == [".p.rigctl-lock"]
    monkeypatch.setattr(files_mod, "_write_file", real)
    assert rigctl("render", renamed_spec, "-o", out)[0] == 0
    assert (out / "files/h1/rigctl-small.service").is_file()


def test_a_render_killed_between_the_two_renames_is_repaired_by_the_next(rigctl, tmp_path, renamed_spec):
    """Where renameat2(RENAME_EXCHANGE) is missing the swap is two renames; a crash between them
    leaves DIR missing, the old tree beside it and a finished new one: the next render restores and redoes."""
    out = tmp_path / "p"
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    before = tree(out)
    os.rename(out, tmp_path / ".p.rigctl-old")
    (tmp_path / ".p.rigctl-new").mkdir()
    (tmp_path / ".p.rigctl-new" / "site.yml").write_text("half\n")
    code, stdout, _ = rigctl("render", LAB_SPEC, "-o", out)
    assert code == 0 and " 0 created, 0 changed" in stdout
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".p.")) == [".p.rigctl-lock"]


def test_the_two_rename_swap_works_without_renameat2(rigctl, tmp_path, renamed_spec, monkeypatch):
    monkeypatch.setattr(files_mod, "_exchange", lambda a, b: False)
    out = tmp_path / "p"
    assert rigctl("render", LAB_SPEC, "-o", out)[0] == 0
    code, stdout, _ = rigctl("render", renamed_spec, "-o", out)
    assert code == 0 and "created   files/h1/rigctl-small.service" in stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".p.")) == [".p.rigctl-lock"]
