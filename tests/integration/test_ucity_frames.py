"""benchmarks/ucity_frames.py says in one line what is missing (the ROM, PyBoy) and writes nothing."""

from __future__ import annotations

import json
import sys


def test_a_missing_rom_is_one_line_naming_where_it_was_looked_for(tmp_path, monkeypatch, capsys):
    from benchmarks import ucity_frames

    monkeypatch.setenv(ucity_frames.ROM_ENV, str(tmp_path / "nowhere.gbc"))
    assert ucity_frames.main(["--out", str(tmp_path / "frames")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nowhere.gbc") in err and "--rom" in err
    assert not (tmp_path / "frames").exists()


def test_missing_pyboy_is_one_line_saying_what_to_install(tmp_path, monkeypatch, capsys):
    from benchmarks import ucity_frames

    rom = tmp_path / "ucity.gbc"
    rom.write_bytes(b"not checked: no sha256 in this split")
    split = ucity_frames.load_split()
    split["rom"]["sha256"] = None
    (tmp_path / "split.json").write_text(json.dumps(split))
    monkeypatch.setitem(sys.modules, "pyboy", None)  # import pyboy fails
    assert ucity_frames.main(["--out", str(tmp_path / "frames"), "--rom", str(rom),
                              "--split", str(tmp_path / "split.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install -r requirements-bench.lock" in err
