"""decolorize: strip ANSI color codes (Promtail's decolorize_test.go and more sequences)."""
from __future__ import annotations

import pytest

from logpipe.testing import run_pipeline


@pytest.mark.parametrize(
    "line, expected",
    [
        ("sample text", "sample text"),
        ("\033[0;32mgreen\033[0m \033[0;31mred\033[0m", "green red"),
        ("\033[1;38;5;208mbold orange\033[39m", "bold orange"),
        ("\033]0;title\007after", "after"),  # an OSC sequence ended by BEL
        ("\x9b31mcsi\x9b0m", "csi"),  # the one-byte CSI
        ("\033[2K\033[1Gprogress 50%", "progress 50%"),
        # \d is ASCII in RE2: with an Arabic-Indic digit this is no escape sequence
        ("\033[\u0663mx", "\033[\u0663mx"),
        ("multi\nline \033[1mbold\033[0m", "multi\nline bold"),
    ],
)
def test_decolorize(line, expected):
    assert run_pipeline("- decolorize:", [line]).lines == [expected]


def test_a_batch_of_lines_keeps_its_entries():
    lines = ["\033[32mok\033[0m", "plain", "a\nb \033[31mc\033[0m", ""]
    assert run_pipeline("- decolorize: {}", lines).lines == ["ok", "plain", "a\nb c", ""]
    assert run_pipeline("- decolorize: {}", lines[:2] + [""]).lines == ["ok", "plain", ""]
