"""A message names an option as the user sets it: the keyword from Python, the flag at the command line."""

from __future__ import annotations

from lorakit.errors import command_line_wording, option_name, option_setting


def test_options_are_named_as_the_user_sets_them():
    assert (option_name("text_column"), option_setting("on_empty", "skip")) == ("text_column", "on_empty='skip'")
    assert option_setting("text_column", "<one of them>") == "text_column=<one of them>"
    assert option_setting("overwrite", True) == "overwrite=True"
    with command_line_wording():
        assert (option_name("text_column"), option_setting("on_empty", "skip")) == ("--text-column", "--on-empty skip")
        assert option_setting("text_column", "<one of them>") == "--text-column <one of them>"
        assert option_setting("overwrite", True) == "--overwrite"
    assert option_name("text_column") == "text_column"
