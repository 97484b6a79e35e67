"""One table of dataset formats (multibox/dataset_formats.py): the config, readers, writers and CLI follow it.
(Each format's training, eval, predict and export from a hand-written config are in tests/journeys.)"""

from __future__ import annotations

import typing

import pytest

from multibox.cli import parse_args
from multibox.config import DataConfig, is_split_name
from multibox.data.formats import READERS, WRITERS
from multibox.dataset_formats import FORMAT_NAMES, FORMATS, WRITABLE_FORMATS


def test_config_readers_writers_and_cli_follow_the_table() -> None:
    assert typing.get_args(DataConfig.model_fields["format"].annotation) == FORMAT_NAMES
    assert tuple(READERS) == FORMAT_NAMES
    assert tuple(WRITERS) == WRITABLE_FORMATS
    for name in FORMAT_NAMES:
        assert parse_args(["data", "convert", "--from", name, "--to", "coco", "a", "b"]).source_format == name
        assert f"{name}: " in str(DataConfig.model_json_schema())  # the annotations key says what it holds
    with pytest.raises(SystemExit):  # argparse refuses a format without a writer
        parse_args(["data", "convert", "--from", "coco", "--to", "cognata", "a", "b"])


@pytest.mark.parametrize("name", [n for n, f in FORMATS.items() if f.split_suffix])
def test_split_names_follow_the_table(name: str) -> None:
    suffix = FORMATS[name].split_suffix
    assert is_split_name(name, "trainval") and not is_split_name(name, f"trainval{suffix}")
    assert not is_split_name(name, "sets/trainval") and not is_split_name("coco", "trainval")
