"""The master key: generated once per data directory, whoever starts first."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from dispatcher.crypto import load_keyring
from dispatcher.settings import Settings


def _tracking_key(data_dir: str) -> bytes | str:
    try:
        return load_keyring(Settings(data_dir=Path(data_dir), secret_key=None)).tracking_key
    except Exception as exc:  # reported to the test, which names it
        return f"{type(exc).__name__}: {exc}"


def test_processes_starting_together_on_a_new_data_directory_share_one_whole_master_key(tmp_path: Path) -> None:
    """An API and a worker process started at once: neither may read the key file half written, and
    both must end up with the same key (signing secrets one encrypts, the other decrypts)."""
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        for attempt in range(15):
            data_dir = tmp_path / str(attempt)
            keys = pool.map(_tracking_key, [str(data_dir)] * 16)
            assert all(isinstance(k, bytes) for k in keys), [k for k in keys if not isinstance(k, bytes)]
            assert len(set(keys)) == 1
            assert [p.name for p in data_dir.iterdir()] == ["secret.key"]  # nothing left behind


def test_a_configured_secret_key_is_used_and_nothing_is_written(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    first = load_keyring(Settings(data_dir=tmp_path, secret_key=key))
    assert first.fernet.decrypt(first.encrypt("whsec_x")) == b"whsec_x"
    assert load_keyring(Settings(data_dir=tmp_path, secret_key=key)).tracking_key == first.tracking_key
    assert list(tmp_path.iterdir()) == []
