"""fileio: writes replace their target whole or not at all."""
import json

import pytest
import torch

import fileio.atomic
from fileio import link_atomically, torch_save_atomically, write_bytes_atomically, write_json_atomically, \
    write_text_atomically


def test_each_form_writes_its_content_and_leaves_no_temporary(tmp_path):
    write_bytes_atomically(tmp_path / "a.bin", b"\x00\x01")
    write_text_atomically(tmp_path / "sub" / "b.txt", "héllo")
    write_json_atomically(tmp_path / "c.json", {"x": [1, 2]})
    torch_save_atomically({"w": torch.arange(3)}, tmp_path / "d.pt")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "d.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "b.txt", "c.json", "d.pt", "sub"]
    assert (tmp_path / "a.bin").stat().st_mode & 0o044 == 0o044  # readable by others, unlike mkstemp's default


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    torch_save_atomically({"step": 1}, target)
    before = target.read_bytes()

    def failing_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        torch_save_atomically({"step": 2}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    monkeypatch.undo()

    monkeypatch.setattr(fileio.atomic.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_text_atomically(target, "interrupted")
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_link_is_the_same_file_and_survives_the_source_being_replaced(tmp_path, monkeypatch):
    stage = torch_save_atomically({"step": 1}, tmp_path / "coarse.pt")
    link_atomically(stage, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").stat().st_ino == stage.stat().st_ino  # one copy on disk, not two
    torch_save_atomically({"step": 2}, stage)  # a new file under the old name: the link keeps step 1 until relinked
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1
    link_atomically(stage, tmp_path / "last.pt")
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coarse.pt", "last.pt"]

    def no_links(*args):
        raise OSError("hard links not supported")

    monkeypatch.setattr(fileio.atomic.os, "link", no_links)  # e.g. a FAT or network file system: a copy instead
    torch_save_atomically({"step": 3}, stage)
    link_atomically(stage, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").stat().st_ino != stage.stat().st_ino
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coarse.pt", "last.pt"]
