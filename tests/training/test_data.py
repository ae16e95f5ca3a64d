"""NSynth-layout rendering and loading, filters, plain audio folders, bad files skipped."""

import json

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.models.errors import ParameterError
from spectro_fx.training.cli import main
from spectro_fx.training.data import CropDataset, NoteFilter, load_clips, read_examples
from spectro_fx.training.render_notes import gm_family, parse_int_list, render_notes

SR = 16000


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    """A real rendered mini set: piano and fingered bass, two pitches, two velocities, plus a
    pitch outside the bass's range that FluidSynth leaves silent."""
    out = tmp_path_factory.mktemp("render") / "mini"
    with pytest.warns(UserWarning, match="silent"):
        result = render_notes(out, programs=[0, 33], pitches=[48, 60, 127], velocities=[64, 100], sr=SR, progress=False)
    return out, result


def test_render_writes_nsynth_layout(notes):
    out, result = notes
    examples = json.loads((out / "examples.json").read_text())
    assert result["rendered"] == len(examples) >= 8
    assert result["skipped_silent"] >= 1
    for key, ex in examples.items():
        assert ex["note_str"] == key
        audio, sr = sf.read(out / "audio" / f"{key}.wav")
        assert sr == SR and audio.ndim == 1 and len(audio) == 4 * SR
        assert np.abs(audio).max() > 1e-3
    ex = examples["keyboard_acoustic_000-060-100"]
    assert (ex["pitch"], ex["velocity"], ex["instrument_family_str"], ex["instrument_source_str"]) == (60, 100, "keyboard", "acoustic")
    # held 3 s then released: the last half second is much quieter than the held part
    audio, _ = sf.read(out / "audio" / "keyboard_acoustic_000-060-100.wav")
    assert np.abs(audio[-SR // 2 :]).max() < np.abs(audio[: 3 * SR]).max()


def test_render_refuses_existing_folder_and_bad_lists(notes, tmp_path):
    out, _ = notes
    with pytest.raises(ParameterError, match="exists and is not empty"):
        render_notes(out, programs=[0], pitches=[60], velocities=[100], sr=SR, progress=False)
    with pytest.raises(ParameterError, match="programs="):
        parse_int_list("0,200", name="programs", low=0, high=127)
    assert parse_int_list("36:48:4,60", name="pitches", low=0, high=127) == [36, 40, 44, 48, 60]
    assert gm_family(33) == ("bass", "electronic") and gm_family(52)[0] == "vocal"
    assert not (tmp_path / "x").exists()


def test_render_cli(tmp_path):
    assert main(["render-notes", str(tmp_path / "cli"), "--programs", "0", "--pitches", "60", "--velocities", "90", "--sr", str(SR)]) == 0
    assert (tmp_path / "cli" / "audio" / "keyboard_acoustic_000-060-090.wav").is_file()
    assert main(["render-notes", str(tmp_path / "bad"), "--soundfont", str(tmp_path / "none.sf2")]) == 2
    assert not (tmp_path / "bad").exists()


def test_nsynth_loader_filters(notes):
    out, _ = notes
    everything = load_clips(out, sr=SR)
    assert len(everything) == len(read_examples(out))
    bass = load_clips(out, sr=SR, note_filter=NoteFilter(families=("bass",)))
    assert bass.names and all(n.startswith("bass_") for n in bass.names)
    loud_high = load_clips(out, sr=SR, note_filter=NoteFilter(pitch_range=(55, 127), velocity_range=(90, 127)))
    assert sorted(loud_high.names) == ["bass_electronic_033-060-100", "keyboard_acoustic_000-060-100"]
    electronic = load_clips(out, sr=SR, note_filter=NoteFilter(sources=("electronic",)))
    assert set(electronic.names) == set(bass.names)
    resampled = load_clips(out, sr=8000, note_filter=NoteFilter(instruments=("keyboard_acoustic_000",)))
    assert all(len(a) == 4 * 8000 for a in resampled.audio)
    with pytest.raises(ParameterError, match="no usable audio"):
        load_clips(out, sr=SR, note_filter=NoteFilter(families=("organ",)))
    with pytest.raises(ParameterError, match="pitch_range"):
        NoteFilter(pitch_range=(80, 20))


def test_folder_skips_bad_files(tmp_path, rng):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(SR * 2) / SR)
    sf.write(folder / "good.wav", tone, SR)
    sf.write(folder / "sub" / "good44.flac", 0.3 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100), 44100)
    sf.write(folder / "silent.wav", np.zeros(SR), SR)
    sf.write(folder / "short.wav", tone[:100], SR)
    (folder / "corrupt.wav").write_bytes(b"RIFF" + rng.bytes(500))
    (folder / "notes.txt").write_text("not audio")
    with pytest.warns(UserWarning, match=r"skipped 3 file\(s\): 1 silent, 1 too short, 1 unreadable"):
        clips = load_clips(folder, sr=SR, min_samples=1024, segment_s=1.0)
    assert clips.skipped == {"silent": 1, "too short": 1, "unreadable": 1}
    # good.wav -> two 1 s segments; the 44.1 kHz file -> one segment resampled to 16 kHz
    assert clips.names == ["good.wav#0", "good.wav#1", "sub/good44.flac#0"]
    assert [len(a) for a in clips.audio] == [SR, SR, SR]
    assert all(a.dtype == np.float32 for a in clips.audio)


def test_no_usable_file_names_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="empty"):
        load_clips(tmp_path / "empty", sr=SR)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"nonsense")
    with pytest.warns(UserWarning), pytest.raises(ParameterError, match=r"bad.*1 unreadable"):
        load_clips(tmp_path / "bad", sr=SR)
    with pytest.raises(ParameterError, match="not a folder"):
        load_clips(tmp_path / "missing", sr=SR)


def test_crops_are_repeatable(notes):
    out, _ = notes
    clips = load_clips(out, sr=SR)
    a = CropDataset(clips, n_samples=2048, seed=3)
    b = CropDataset(clips, n_samples=2048, seed=3)
    assert a[1].dtype.is_floating_point and a[1].shape == (2048,)
    assert np.array_equal(a[1].numpy(), b[1].numpy())
    b.set_epoch(1)
    assert not np.array_equal(a[1].numpy(), b[1].numpy())
    with pytest.raises(ParameterError, match="shorter than the crop"):
        CropDataset(clips, n_samples=10 * SR)


def test_render_demo_score(tmp_path):
    out = tmp_path / "demo.wav"
    assert main(["render-notes", "--demo", str(out), "--sr", str(SR)]) == 0
    audio, sr = sf.read(out)
    assert sr == SR and audio.ndim == 1 and 10 * SR < len(audio) < 15 * SR
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.01)
