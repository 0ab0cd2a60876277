"""The manifest reader's bad-input contract: every malformed manifest is a ManifestError naming its line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl_edge.data.manifest import (
    SPLITS,
    Manifest,
    Row,
    SingleExampleLabelWarning,
    make_manifest,
    parse_manifest,
    read_manifest,
)
from mtl_edge.errors import ManifestError

HEADER = "path,task,label,split\n"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(text: str) -> Manifest:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleExampleLabelWarning)
        return parse_manifest(text, root="corpus")


def write(folder: Path, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "manifest.csv"
    target.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return target


# ---------------------------------------------------------------- valid input


def test_valid_manifest_keeps_extra_columns_and_lines():
    m = parse(HEADER.rstrip("\n") + ",speaker\na.wav,kws,yes,train,s1\nb.wav,kws,yes,test,s2\n\nc.wav,kws,no,test,s1\n")
    assert [r.path for r in m.rows] == ["a.wav", "b.wav", "c.wav"]
    assert [r.line for r in m.rows] == [2, 3, 5]  # the blank line is skipped but still counted
    assert m.extra_columns == ("speaker",)
    assert m.rows[1].extra == {"speaker": "s2"}
    assert m.tasks == ["kws"] and m.labels("kws") == ["no", "yes"]


def test_unknown_task_is_a_manifest_error():
    with pytest.raises(ManifestError, match="unknown task 'spk'"):
        parse(HEADER + "a.wav,kws,yes,train\nb.wav,kws,yes,test\n").rows_for("spk")


# Printable text: letters, digits, punctuation (commas, quotes), symbols and spaces, any script.
_printable = st.characters(categories=["L", "N", "P", "S", "Zs"])
# Anything else a cell can hold, control characters and line breaks included, except a lone "\r"
# (see test_carriage_return_in_a_value_round_trips).
_any = st.characters(exclude_categories=["Cs"], exclude_characters="\r")


def _cells(chars) -> st.SearchStrategy[str]:
    # the reader strips the required columns, so a value with outer whitespace cannot round trip
    return st.text(chars, min_size=1, max_size=12).filter(lambda s: s == s.strip() and s != "")


def _paths(chars) -> st.SearchStrategy[str]:
    return _cells(chars).filter(lambda s: not Path(s).is_absolute() and ".." not in Path(s).parts)


@st.composite
def manifests(draw, chars=_printable) -> list[Row]:
    """Valid row lists: distinct paths, one split per path, any labels, an extra column."""
    paths = draw(st.lists(_paths(chars), min_size=1, max_size=8, unique=True))
    tasks = draw(st.lists(_cells(chars), min_size=1, max_size=3, unique=True))
    rows = []
    for path in paths:
        split = draw(st.sampled_from(SPLITS))
        for task in draw(st.lists(st.sampled_from(tasks), min_size=1, unique=True)):
            extra = {"note": draw(st.text(_any, max_size=8))}
            rows.append(Row(path, task, draw(_cells(chars)), split, extra))
    return rows


def _assert_round_trip(rows: list[Row]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleExampleLabelWarning)
        made = make_manifest("corpus", rows)
        back = parse_manifest(made.to_csv(), root="corpus")
    assert back.rows == made.rows == rows
    assert [r.extra for r in back.rows] == [r.extra for r in rows]
    assert back.extra_columns == ("note",)


@FAST
@given(manifests())
def test_round_trip(rows):
    _assert_round_trip(rows)


@FAST
@given(manifests(chars=_any))
def test_round_trip_control_characters(rows):
    _assert_round_trip(rows)


@pytest.mark.parametrize("note", ["\r", "a\rb"])
def test_carriage_return_in_a_value_round_trips(note):
    _assert_round_trip([Row("a.wav", "kws", "yes", "train", {"note": note}), Row("b.wav", "kws", "yes", "test", {"note": ""})])


def test_make_manifest_rejects_what_reading_would_reject():
    with pytest.raises(ManifestError, match="empty 'label'"):
        make_manifest("corpus", [Row("a.wav", "kws", "  ", "train"), Row("b.wav", "kws", "  ", "test")])


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_is_a_manifest_or_a_manifest_error(text):
    try:
        result = parse(text)
    except ManifestError:
        return
    assert isinstance(result, Manifest) and result.rows


@FAST
@given(st.lists(st.text(st.sampled_from('ab,"\n\r .\\/'), max_size=20), max_size=6))
def test_csv_like_text_is_a_manifest_or_a_manifest_error(lines):
    """Near-valid CSV (a real header, then fragments of quotes, commas and newlines) hits the parser harder."""
    try:
        result = parse(HEADER + "\n".join(lines))
    except ManifestError:
        return
    assert isinstance(result, Manifest)


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty manifest"),
        ("path,task,label,split\n", "header but no rows"),
        ("path,task,label\na.wav,kws,yes\n", "missing column(s) split"),
        ("file,task,label,split\na.wav,kws,yes,train\n", "missing column(s) path"),
        ("path,task,label,split,task\na.wav,kws,yes,train,x\n", "repeated column(s) task"),
        (HEADER + 'a.wav,kws,"yes,train\nb.wav,kws,no,test\n', "malformed CSV"),
        (HEADER + "a.wav,kws,yes,train\nb.wav,kws,no\n", "line 3: 3 fields, the header has 4"),
        (HEADER + "a.wav,kws,yes,train\nb.wav,kws,no,test,extra\n", "line 3: 5 fields"),
        (HEADER + "a.wav,kws,yes,train\nb.wav,kws,,test\n", "line 3: empty 'label' for b.wav"),
        (HEADER + "a.wav,kws,yes,train\nb.wav,kws,  ,test\n", "line 3: empty 'label'"),
        (HEADER + "a.wav,,yes,train\n", "line 2: empty 'task'"),
        (HEADER + "a.wav,kws,yes,train\nb.wav,kws,no,dev\n", "line 3: unknown split 'dev'"),
        (HEADER + "a.wav,kws,yes,train\nb.wav,kws,no,test-voices\n", "or test_<name> for a further held-out test split"),
        (HEADER + "a.wav,kws,yes,train\nb.wav,kws,no,test_\n", "line 3: unknown split 'test_'"),
        (HEADER + "a.wav,kws,yes,train\na.wav,kws,no,train\n", "line 3: duplicated path a.wav for task 'kws' (first on line 2)"),
        (HEADER + "a.wav,kws,yes,train\na.wav,spk,s1,test\n", "line 3: a.wav is in split 'test' here but 'train' on line 2"),
        (HEADER + "/data/a.wav,kws,yes,train\n", "line 2: path '/data/a.wav' must be relative"),
        (HEADER + "../a.wav,kws,yes,train\n", "line 2: path '../a.wav' must be relative"),
        (HEADER + "audio/../../a.wav,kws,yes,train\n", "must be relative"),
    ],
)
def test_malformed_manifest(text, message):
    with pytest.raises(ManifestError) as info:
        parse(text)
    assert message in str(info.value)


def test_further_test_splits_come_after_test_in_name_order():
    manifest = parse(HEADER + "a.wav,kws,yes,train\nb.wav,kws,no,test_zz\nc.wav,kws,no,test_unseen_speakers\n"
                     "d.wav,kws,yes,test\n")
    assert manifest.splits == ["train", "validation", "test", "test_unseen_speakers", "test_zz"]
    assert manifest.extra_test_splits == ["test_unseen_speakers", "test_zz"]
    assert parse(HEADER + "a.wav,kws,yes,train\n").extra_test_splits == []


def test_unbalanced_quote_names_a_line():
    with pytest.raises(ManifestError, match=r"line \d+: malformed CSV"):
        parse(HEADER + 'a.wav,kws,yes,train\nb.wav,"kws,no,test\n')


def test_text_after_a_closing_quote_is_rejected():
    with pytest.raises(ManifestError, match="line 2: malformed CSV"):
        parse(HEADER + '"a.wav"x,kws,yes,train\n')


def test_header_whitespace_is_tolerated():
    m = parse(" path , task,label ,split\na.wav,kws,yes,train\nb.wav,kws,yes,test\n")
    assert m.rows[0] == Row("a.wav", "kws", "yes", "train")


def test_single_example_label_warns_with_line():
    with pytest.warns(SingleExampleLabelWarning, match="line 3: label 'no' of task 'kws' has a single example"):
        parse_manifest(HEADER + "a.wav,kws,yes,train\nb.wav,kws,no,test\nc.wav,kws,yes,test\n", root="corpus")


def test_make_manifest_validates_like_a_file():
    with pytest.raises(ManifestError, match="unknown split"):
        make_manifest("corpus", [Row("a.wav", "kws", "yes", "training")])


# ---------------------------------------------------------------- files on disk


def test_read_manifest_missing_audio_file(tmp_path):
    write(tmp_path, HEADER + "a.wav,kws,yes,train\nb.wav,kws,yes,test\n")
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(ManifestError, match="line 3: audio file missing: b.wav"):
        read_manifest(tmp_path)
    assert len(read_manifest(tmp_path, check_files=False).rows) == 2


def test_read_manifest_accepts_the_file_itself(tmp_path):
    target = write(tmp_path, HEADER + "a.wav,kws,yes,train\nb.wav,kws,yes,test\n")
    m = read_manifest(target, check_files=False)
    assert m.root == tmp_path and len(m.rows) == 2


def test_no_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path)


def test_non_utf8_bytes(tmp_path):
    write(tmp_path, HEADER.encode() + "caf\u00e9.wav,kws,yes,train\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(tmp_path, check_files=False)


def test_utf8_bom_is_accepted(tmp_path):
    write(tmp_path, b"\xef\xbb\xbf" + (HEADER + "a.wav,kws,yes,train\nb.wav,kws,yes,test\n").encode())
    assert read_manifest(tmp_path, check_files=False).rows[0].path == "a.wav"


def test_empty_file(tmp_path):
    write(tmp_path, b"")
    with pytest.raises(ManifestError, match="empty manifest"):
        read_manifest(tmp_path, check_files=False)


def test_write_then_read_round_trip(tmp_path):
    rows = [Row("a, \"b\".wav", "kws", "ja", "train", {"note": "x"}), Row("ç/d.wav", "kws", "ja", "test", {"note": ""})]
    made = make_manifest(tmp_path, rows)
    made.write()
    back = read_manifest(tmp_path, check_files=False)
    assert back.rows == rows and [r.extra for r in back.rows] == [r.extra for r in rows]
