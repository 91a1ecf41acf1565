"""Bad command lines end in one short error line naming the flag, file or gene at fault, never a traceback."""

from __future__ import annotations

from jcw.cli import main


def jcw(*args) -> int:
    return main([str(a) for a in args])


def test_a_huge_error_message_is_capped_to_one_short_line(tmp_path, capsys):
    name = "d" * 100_000  # an unknown device: its name is echoed in the error
    assert jcw("plan", "--model", tmp_path / "none.pt", "--device", name, "--out", tmp_path / "plan.yaml") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 700
    assert err.startswith("jcw plan: error: ") and "more characters)" in err
