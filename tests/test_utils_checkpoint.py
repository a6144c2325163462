"""Atomic checkpoint writes and checked loads."""
import os
import pickle
import stat

import pytest
import torch

from utils.checkpoint import MAGIC, atomic_save, atomic_save_checked, atomic_write_text, load_checkpoint, replace_from_temp
from utils.errors import UserError


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _blob():
    return {"format": 1, "epoch": 3, "tensor": torch.arange(6.0).view(2, 3), "nested": {"a": [1, 2]}}


def test_round_trip(tmp_path):
    path = tmp_path / "deep" / "dir" / "ckpt.pt"   # parents are created
    atomic_save(_blob(), path)
    back = load_checkpoint(path)
    assert back["format"] == 1 and back["epoch"] == 3 and back["nested"] == {"a": [1, 2]}
    assert torch.equal(back["tensor"], torch.arange(6.0).view(2, 3))
    assert sorted(os.listdir(path.parent)) == ["ckpt.pt"]


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"format": 1, "epoch": 1}, path)
    atomic_save({"format": 1, "epoch": 2}, str(path))
    assert load_checkpoint(str(path))["epoch"] == 2
    assert os.listdir(tmp_path) == ["ckpt.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty"])
def test_corrupted_file_is_a_user_error_naming_the_path(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    atomic_save(_blob(), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        path.write_bytes(bytes(b ^ 0x5A for b in data))
    else:
        path.write_bytes(b"")
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)


def test_missing_file_is_a_user_error(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)
    with pytest.raises(UserError):
        load_checkpoint(tmp_path)   # a folder is not a checkpoint file


@pytest.mark.parametrize("obj", [{"epoch": 1}, [1, 2, 3], "text"])
def test_non_checkpoint_pickle_is_a_user_error(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(obj))
    with pytest.raises(UserError):
        load_checkpoint(plain)


def test_failing_save_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"format": 1, "epoch": 1}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"format": 1, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_failing_first_save_creates_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        atomic_save({"format": 1, "bad": Unpicklable()}, tmp_path / "ckpt.pt")
    assert os.listdir(tmp_path) == []


def test_files_respect_umask(tmp_path, umask_022):
    path = tmp_path / "ckpt.pt"
    atomic_save(_blob(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    text = tmp_path / "m.json"
    atomic_write_text('{"a": 1}', text)
    assert stat.S_IMODE(os.stat(text).st_mode) == 0o644
    assert text.read_text() == '{"a": 1}'


def test_files_respect_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_save(_blob(), tmp_path / "ckpt.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "ckpt.pt").st_mode) == 0o600


def test_atomic_write_text_failure_keeps_old(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_text("old", path)
    with pytest.raises(TypeError):
        atomic_write_text(12345, path)   # not a str: the write fails
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["m.json"]


def test_replace_from_temp(tmp_path, umask_022):
    path = tmp_path / "model.bin"
    path.write_text("old")
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert str(tmp).endswith(".bin") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "w") as f:
            f.write("new")

    replace_from_temp(path, write)
    assert path.read_text() == "new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        replace_from_temp(path, fail)
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["model.bin"]


def test_checked_round_trip_loads_tensors_and_plain_containers(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save_checked(_blob(), path)
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and torch.equal(back["tensor"], torch.arange(6.0).view(2, 3))
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_checked_file_with_any_byte_flipped_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save_checked(_blob(), path)
    data = path.read_bytes()
    # every byte of the header and of the first and last 64 bytes, and 300 spread over the rest
    positions = set(range(len(MAGIC) + 32 + 64)) | set(range(len(data) - 64, len(data)))
    positions |= set(range(0, len(data), max(1, len(data) // 300)))
    for pos in sorted(positions):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(UserError) as exc:
            load_checkpoint(path)
        assert str(path) in str(exc.value), pos


def test_a_checkpoint_that_would_run_code_on_load_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save_checked({"format": 3, "payload": Picklable()}, path)
    with pytest.raises(UserError, match="corrupted or unreadable"):
        load_checkpoint(path)


class Picklable:
    """A class a weights-only load must not instantiate."""
