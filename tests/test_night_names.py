"""Product names of a night are unique even where header values made safe for file names
collide, and each product is calibrated with the master of its own raw FILTER."""

from __future__ import annotations

import json
import os

import pytest
from astropy.io import fits

from skystack.night.names import ProductNames
from skystack.night.run import run_night
from tests.tiny_night import LOW, left_right_ratio, write_flat, write_lights


@pytest.fixture(scope="module")
def colliding(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    raw = root / "raw"
    raw.mkdir()
    # FILTER 'V/1' has a flat whose left half responds LOW; 'V_1' a uniform flat.
    write_flat(raw, "flatA", "V/1", left=LOW)
    write_flat(raw, "flatB", "V_1", left=1.0)
    # Lights that really went through those optics: flat-fielded, both come out uniform.
    write_lights(raw, "la", "M1", "V/1", response_left=LOW)
    write_lights(raw, "lb", "M1", "V_1")
    # OBJECT 'a/b' vs 'a_b'; OBJECT 'X' FILTER 'Y_Z' vs OBJECT 'X_Y' FILTER 'Z'.
    write_lights(raw, "lc", "a/b", "V_1")
    write_lights(raw, "ld", "a_b", "V_1", response_left=0.8)
    write_lights(raw, "le", "X", "Y_Z")
    write_lights(raw, "lf", "X_Y", "Z", response_left=0.8)
    out = root / "out"
    lines: list[str] = []
    result = run_night(raw, out, backend="cpu", log=lines.append, previews=True)
    return raw, out, result, lines


def _stack_of(result, obj, filt):
    found = [p for p in result.products if p.kind == "stack"
             and fits.getval(p.path, "OBJECT") == obj and fits.getval(p.path, "FILTER") == filt]
    assert len(found) == 1, (obj, filt, [p.path for p in result.products])
    return found[0]


def test_colliding_safe_names_give_distinct_products(colliding):
    raw, out, result, lines = colliding
    paths = [p.path for p in result.products]
    assert len(set(paths)) == len(paths), paths
    assert all(os.path.isfile(p) for p in paths)
    stacks = [p for p in result.products if p.kind == "stack"]
    assert len(stacks) == 6
    for p in stacks:
        assert p.status == "built" and fits.getval(p.path, "NCOMBINE") == 3
    # The disambiguated names are said in the log and in the product's notes.
    assert any("V/1" in line and "V_1" in line for line in lines), lines
    renamed = [p for p in result.products if any("same name" in n for n in p.notes)]
    assert len(renamed) == 2 + 2 * 3  # two flats, three pairs of stacks


def test_each_stack_is_calibrated_with_its_own_filters_flat(colliding):
    raw, out, result, _ = colliding
    # The lights of V/1 have the left half at LOW: only V/1's flat makes them uniform.
    assert left_right_ratio(_stack_of(result, "M1", "V/1").path) == pytest.approx(1.0, abs=0.01)
    assert left_right_ratio(_stack_of(result, "M1", "V_1").path) == pytest.approx(1.0, abs=0.01)
    assert left_right_ratio(_stack_of(result, "a_b", "V_1").path) == pytest.approx(0.8, abs=0.01)
    assert left_right_ratio(_stack_of(result, "X_Y", "Z").path) == pytest.approx(0.8, abs=0.01)
    for p in result.products:
        if p.kind == "flat":
            want = fits.getval(p.inputs[0], "FILTER")
            assert fits.getval(p.path, "FILTER") == want


def test_summary_names_each_frames_own_product_and_flat(colliding):
    raw, out, result, _ = colliding
    summary = json.loads((out / "summary.json").read_text())
    flats = {fits.getval(os.path.join(out, p["path"]), "FILTER"): os.path.basename(p["path"])
             for p in summary["products"] if p["kind"] == "flat"}
    assert len(flats) == 2
    for f in summary["frames"]:
        if f["role"] != "light":
            continue
        product = os.path.join(out, f["group"])
        header = fits.getheader(f["file"])
        assert fits.getval(product, "OBJECT") == header["OBJECT"]
        assert fits.getval(product, "FILTER") == header["FILTER"]
        assert f["masters"].get("flat") == flats.get(header["FILTER"])
    for p in summary["products"]:
        assert p["inputs"] and all(os.path.isfile(i) for i in p["inputs"]) or \
            p["kind"] == "badpix"
    previews = sorted(os.listdir(out / "previews"))
    quality = [p for p in previews if p.endswith("_quality.png")]  # one per stack
    assert len(previews) - len(quality) == 6 and len(quality) == 6, previews


def test_rerun_reuses_every_disambiguated_product(colliding):
    raw, out, result, _ = colliding
    again = run_night(raw, out, backend="cpu", previews=False)
    assert {p.path for p in again.products} == {p.path for p in result.products}
    assert {p.status for p in again.products} == {"reused"}


def test_names_are_plain_unless_shared_case_insensitively():
    book = ProductNames()
    a = book.claim("/o", "M1_V", ".fits", ("stack", "M1", "V"))
    b = book.claim("/o", "M1_B", ".fits", ("stack", "M1", "B"))
    c = book.claim("/o", "M1_b", ".fits", ("stack", "M1", "b"))
    final, renamed = book.resolve()
    assert final[a] == "/o/M1_V.fits"
    assert final[b] != final[c] and "~" in final[b] and "~" in final[c]
    assert {r.identity for r in renamed} == {("stack", "M1", "B"), ("stack", "M1", "b")}


def test_calibrated_copies_of_lights_of_one_name_are_kept_apart(tmp_path):
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "b").mkdir()
    one = write_lights(raw / "a", "l", "M1", "V")
    two = write_lights(raw / "b", "l", "M1", "V", response_left=0.5)
    out = tmp_path / "out"
    run_night([str(raw / "a"), str(raw / "b")], out, backend="cpu", previews=False,
              save_calibrated=True)
    copies = sorted(os.listdir(out / "calibrated"))
    assert len(copies) == len(one) + len(two), copies
    ratios = sorted(round(left_right_ratio(out / "calibrated" / c), 2) for c in copies)
    assert ratios == [0.5] * 3 + [1.0] * 3


def test_header_values_never_make_hidden_or_escaping_names(tmp_path):
    """OBJECT '../../escape' and '.hidden': products stay in OUT's folders and no name starts
    with a dot (hidden) or is a path component ('..')."""
    raw = tmp_path / "raw"
    raw.mkdir()
    write_lights(raw, "la", "../../escape", "V")
    write_lights(raw, "lb", ".hidden", "V")
    out = tmp_path / "out"
    result = run_night(raw, out, backend="cpu", previews=True)
    for p in result.products:
        rel = os.path.relpath(p.path, out)
        assert not rel.startswith(".."), rel
        assert not os.path.basename(p.path).startswith("."), rel
    for folder, _, files in os.walk(out):
        assert not [f for f in files if f.startswith(".")], (folder, files)
