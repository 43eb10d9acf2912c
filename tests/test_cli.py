"""The command line: outputs, the JSON report, --dry-run, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys

import onnx
import pytest
from helpers import MODELS, assert_matches_masked

from onnxprune.cli import main


@pytest.fixture
def model_copy(tmp_path):
    path = tmp_path / "resnet.onnx"
    shutil.copy(MODELS / "resnet.ts.onnx", path)
    return path


def test_prune_writes_beside_input_and_leaves_input_alone(model_copy, capsys):
    before = model_copy.read_bytes()
    assert main([str(model_copy), "--ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    written = model_copy.with_name("resnet.pruned.onnx")
    assert written.exists() and f"written: {written}" in out
    assert "params" in out and "MACs" in out and "file size" in out and "pinned" in out
    assert float(re.search(r"relative L2 error <= ([0-9.e+-]+)", out).group(1)) > 0
    assert model_copy.read_bytes() == before
    pruned = onnx.load(written)
    onnx.checker.check_model(pruned, full_check=True)
    assert sorted(p.name for p in model_copy.parent.iterdir()) == sorted([model_copy.name, written.name])


def test_outputs_get_the_permissions_of_a_plainly_written_file(model_copy, tmp_path):
    # They are written to temporary files renamed into place; mkstemp made those private (0600).
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    old_mask = os.umask(0o022)
    try:
        assert main([str(model_copy), "-o", str(out), "--report", str(report), "--no-latency", "-q"]) == 0
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 and stat.S_IMODE(report.stat().st_mode) == 0o644


def test_report_has_the_documented_fields(model_copy, tmp_path):
    report_path = tmp_path / "report.json"
    out = tmp_path / "out.onnx"
    assert main([str(model_copy), "-o", str(out), "--ratio", "0.3", "--round-to", "1", "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    for side in ("original", "pruned"):
        assert set(report[side]) == {"params", "macs", "size_bytes"}
    assert report["pruned"]["params"] < report["original"]["params"]
    assert report["pruned"]["size_bytes"] == out.stat().st_size
    for group in report["groups"]:
        assert {"members", "channels", "kept", "pinned_reason"} <= set(group)
        assert group["kept"] <= group["channels"]
    assert any(g["pinned_reason"] is None and g["kept"] < g["channels"] for g in report["groups"])
    assert all({"name", "op_type", "in_removed", "out_removed"} <= set(n) for n in report["nodes"])
    assert report["settings"]["ratio"] == 0.3 and report["settings"]["round_to"] == 1
    assert_matches_masked(onnx.load(model_copy), onnx.load(out), report)


def test_dry_run_lists_groups_and_reasons_and_writes_nothing(model_copy, capsys):
    assert main([str(model_copy), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "channel groups:" in out and "prunable" in out
    assert "pinned: Conv node" in out and "model input" in out
    assert "model output" in out
    assert sorted(p.name for p in model_copy.parent.iterdir()) == [model_copy.name]



def test_a_dry_run_says_an_activation_criterion_is_previewed_by_l1(model_copy, capsys):
    assert main([str(model_copy), "--dry-run", "--importance", "apoz"]) == 0
    out = capsys.readouterr().out
    assert "note: --importance apoz needs activations, which a dry run does not record" in out
    assert main([str(model_copy), "--dry-run"]) == 0
    assert "note:" not in capsys.readouterr().out

def test_exclude_from_the_command_line(model_copy, tmp_path, capsys):
    report_path = tmp_path / "r.json"
    assert main([str(model_copy), "-o", str(tmp_path / "o.onnx"), "--exclude", "*", "--report", str(report_path)]) == 0
    assert "nothing was pruned" in capsys.readouterr().out
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["missing.onnx"], "does not exist"),
    (["{dir}"], "is not a file"),
    (["{junk}"], "is not a readable ONNX model"),
    (["{model}", "--ratio", "1.5"], "ratio must be"),
    (["{model}", "--ratio", "-0.1"], "ratio must be"),
    (["{model}", "--round-to", "0"], "round-to must be"),
    (["{model}", "-o", "{model}"], "is the input model"),
    (["{model}", "-o", "{dir}/nowhere/out.onnx"], "cannot write to the folder"),
    (["{model}", "--importance", "magic"], "invalid choice"),
    (["{model}", "--no-such-flag"], "unrecognized arguments"),
])
def test_bad_input_gets_one_line_and_status_2(model_copy, tmp_path, capsys, args, message):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx model at all" * 10)
    argv = [a.format(dir=tmp_path, junk=junk, model=model_copy) for a in args]
    before = model_copy.read_bytes()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert model_copy.read_bytes() == before
    assert not model_copy.with_name("resnet.pruned.onnx").exists()


def test_existing_output_needs_force(model_copy, capsys):
    target = model_copy.with_name("resnet.pruned.onnx")
    target.write_bytes(b"keep me")
    assert main([str(model_copy)]) == 2
    assert "--force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"
    assert main([str(model_copy), "--force"]) == 0
    onnx.checker.check_model(onnx.load(target))


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
