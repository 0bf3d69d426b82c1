"""CLI input files become items, or a sentence saying what is wrong with them."""

from pathlib import Path

import pytest

from speechbatch.inputs import InputError, expand_audio_paths, read_script, stt_item_ids


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def test_txt_skips_blank_lines(tmp_path: Path) -> None:
    """Each non-blank line of a .txt is one item."""
    items = read_script(write(tmp_path, "s.txt", "one\n\n  two  \n"))
    assert items == [{"text": "one"}, {"text": "two"}]


def test_csv_reads_id_text_voice(tmp_path: Path) -> None:
    """A CSV with id,text,voice keeps all three per line."""
    items = read_script(
        write(tmp_path, "s.csv", "id,text,voice\nintro,Hello there,en-gb\nb,Bye,\n")
    )
    assert items == [
        {"text": "Hello there", "id": "intro", "voice": "en-gb"},
        {"text": "Bye", "id": "b"},
    ]


def test_csv_without_text_column_is_refused(tmp_path: Path) -> None:
    """A CSV missing its text column names the problem."""
    with pytest.raises(InputError, match="text"):
        read_script(write(tmp_path, "s.csv", "id,words\n1,hi\n"))


def test_jsonl_reports_the_bad_line(tmp_path: Path) -> None:
    """Malformed JSON Lines point at the line number."""
    with pytest.raises(InputError, match=r"s\.jsonl:2"):
        read_script(write(tmp_path, "s.jsonl", '{"text": "ok"}\n{"text": \n'))


def test_empty_script_is_refused(tmp_path: Path) -> None:
    """A script with nothing to say is an input error, not an empty job."""
    with pytest.raises(InputError):
        read_script(write(tmp_path, "s.txt", "\n \n"))


def test_globs_expand_in_order_without_duplicates(tmp_path: Path) -> None:
    """Globs and explicit paths are merged, sorted and de-duplicated."""
    for name in ("b.wav", "a.wav"):
        (tmp_path / name).write_bytes(b"x")
    paths = expand_audio_paths((str(tmp_path / "*.wav"), str(tmp_path / "a.wav")))
    assert [p.name for p in paths] == ["a.wav", "b.wav"]


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    """A path that does not exist is refused before anything is uploaded."""
    with pytest.raises(InputError, match="no such file"):
        expand_audio_paths((str(tmp_path / "nope.wav"),))


def test_stt_ids_come_from_the_path_below_the_common_folder(tmp_path: Path) -> None:
    """Files with one name in different folders get different ids, folder names included."""
    paths = []
    for call in ("a", "b"):
        (tmp_path / "calls" / call).mkdir(parents=True)
        paths.append(tmp_path / "calls" / call / "recording.wav")
        paths[-1].write_bytes(b"x")
    assert stt_item_ids(paths) == ["a-recording", "b-recording"]


def test_stt_ids_of_one_folder_are_the_file_stems(tmp_path: Path) -> None:
    """Files side by side keep their plain stems as ids."""
    paths = [tmp_path / "one.wav", tmp_path / "two.mp3"]
    assert stt_item_ids(paths) == ["one", "two"]


def test_stt_id_collision_is_refused_naming_both_files(tmp_path: Path) -> None:
    """Two files that would share an id (same stem, other suffix) are an input error."""
    with pytest.raises(InputError, match=r"talk\.wav and .*talk\.mp3 would both be item 'talk'"):
        stt_item_ids([tmp_path / "talk.wav", tmp_path / "talk.mp3"])
