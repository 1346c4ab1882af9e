"""Utilities written once (issue 16): the combine options' defaults and choices, the recipe
fingerprint, the text tables and the file-name parts each come from one place."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json

import numpy as np
import pytest

import skystack
from skystack.cli import build_parser
from skystack.cluster.journal import fingerprint as journal_fingerprint
from skystack.config import CHOICES, DEFAULTS, NIGHT_STACK_OPTIONS, Weights
from skystack.demo_data import write_sample_night
from skystack.errors import SkystackError
from skystack.io.identity import recipe_fingerprint
from skystack.io.info import format_table
from skystack.night.names import safe_name
from skystack.night.products import fingerprint, input_records
from skystack.night.run import STACK_OPTIONS
from skystack.text_table import text_table

# CLI option -> CombineOptions field, where the names differ
_FIELD = {"low": "range_low", "high": "range_high"}


def _combination_actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    group = next(g for g in sub.choices[command]._action_groups if g.title == "combination")
    return {a.dest: a for a in group._group_actions}


@pytest.mark.parametrize("command", ["combine", "stack", "night"])
def test_cli_choices_are_the_options_tables(command):
    actions = _combination_actions(command)
    for name, allowed in CHOICES.items():
        assert tuple(actions[name].choices) == allowed


@pytest.mark.parametrize("command", ["combine", "stack"])
def test_cli_defaults_and_help_are_combine_options_defaults(command):
    actions = _combination_actions(command)
    for dest, action in actions.items():
        if dest in ("sigma", "weights"):
            continue
        default = getattr(DEFAULTS, _FIELD.get(dest, dest))
        assert action.default == default, dest
        if default is not None:
            text = f"{default:g}" if isinstance(default, float) else str(default)
            assert f"({text})" in action.help or f"default: {text}" in action.help, dest
    assert Weights.parse(actions["weights"].default) == DEFAULTS.weights


def test_api_defaults_are_combine_options_defaults():
    params = inspect.signature(skystack.combine_options).parameters
    for name, param in params.items():
        if name in ("sigma", "weights"):
            assert param.default is None
            continue
        assert param.default == getattr(DEFAULTS, _FIELD.get(name, name)), name
    made = skystack.combine_options()
    assert dataclasses.replace(made, mem_limit=None) == DEFAULTS


def test_night_defaults_are_one_table():
    """The night parser's defaults are NIGHT_STACK_OPTIONS; ``--reject`` alone defaults to None
    ("not chosen"), which the night resolves to the table's rejection (or to none with
    ``--interp drizzle``: skystack.night.options)."""
    from skystack.night.options import drizzle_stack_options

    assert STACK_OPTIONS is NIGHT_STACK_OPTIONS
    actions = _combination_actions("night")
    for name, value in NIGHT_STACK_OPTIONS.items():
        assert actions[name].default == (None if name == "reject" else value)
    resolved, _ = drizzle_stack_options({"reject": None}, NIGHT_STACK_OPTIONS, lambda s: None)
    assert {**NIGHT_STACK_OPTIONS, **resolved}["reject"] == NIGHT_STACK_OPTIONS["reject"]
    drizzled, _ = drizzle_stack_options({"reject": None, "interp": "drizzle"},
                                        NIGHT_STACK_OPTIONS, lambda s: None)
    assert drizzled["reject"] == "none"


def test_an_unknown_choice_names_the_allowed_values():
    with pytest.raises(SkystackError, match="invalid --spread 'iqr': choose from std, mad"):
        skystack.combine_options(spread="iqr")


def test_recipe_fingerprint_is_sha1_of_canonical_json():
    """The night's SKYFPRNT keeps its documented form, so products made before still match."""
    identities = [["/raw/a\udcff.fits", 123, 1_700_000_000_000_000_000, "0123456789abcdef"]]
    options = {"b": 1.5, "a": [None, "x"]}
    expected = hashlib.sha1(json.dumps(
        {"kind": "stack", "inputs": identities, "options": options, "depends": ["d"]},
        sort_keys=True).encode()).hexdigest()[:16]
    assert fingerprint("stack", [], options, ["d"], identities=identities) == expected
    record = input_records(identities)[0]
    assert record[:8] == hashlib.sha1(json.dumps(identities[0][0]).encode()).hexdigest()[:8]
    assert record[8:] == hashlib.sha1(json.dumps(identities[0]).encode()).hexdigest()[:8]


def test_fingerprints_see_every_value_of_an_array():
    """An array's text is cut short ("..."): two arrays differing in the middle must still give
    two fingerprints, in the night's recipes as in the cluster's journal."""
    a = np.zeros(5000)
    b = a.copy()
    b[2500] = 1.0
    assert str(a) == str(b)
    assert fingerprint("stack", [], {"weights": a}, identities=[]) != \
        fingerprint("stack", [], {"weights": b}, identities=[])
    assert journal_fingerprint({"weights": a}, []) != journal_fingerprint({"weights": b}, [])
    assert recipe_fingerprint({"w": a}, 24) == recipe_fingerprint({"w": a.copy()}, 24)


def test_text_table_layout():
    rows = [("a.fits", "bias", ""), ("long_name.fits", "flat", "V")]
    assert text_table(("file", "role", "filter"), rows) == [
        "file            role  filter",
        "--------------  ----  ------",
        "a.fits          bias",
        "long_name.fits  flat  V"]
    status = [("a", "used"), ("bb", "skipped: no usable frames")]
    assert text_table(("f", "status"), status, free_last=True) == [
        "f   status",
        "--  ------",
        "a   used",
        "bb  skipped: no usable frames"]


def test_info_table_has_no_trailing_spaces():
    table = format_table([("x.fits", "3x4", "uint16", "", "", "", "")])
    assert all(line == line.rstrip() for line in table.splitlines())


def test_demo_file_names_are_the_nights_safe_names(tmp_path):
    night = write_sample_night(tmp_path, shape=(16, 16), n_bias=0, n_dark=0, n_flat=1,
                               n_light=1, filters=("H.alpha",), objects=["Sh2-155 (Cave)"])
    flat = next(iter(night.flat.values()))[0]
    light = next(iter(night.light.values()))[0]
    assert flat.name == f"flat_{safe_name('H.alpha')}_001.fits"
    assert light.name.startswith(f"light_{safe_name('Sh2-155 (Cave)')}_")
