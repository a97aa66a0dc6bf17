"""One-line renderings of exception messages."""

from agelab.errors import first_line, one_line


def test_first_line_takes_the_first_line_and_falls_back_to_the_type_name():
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("  \n  padded\n")) == "padded"
    assert first_line(RuntimeError("")) == "RuntimeError"  # an empty message used to raise IndexError


def test_one_line_collapses_all_whitespace():
    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line(OSError("x\ny")) == "x y"
