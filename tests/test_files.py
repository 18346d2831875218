"""atomic_open: permissions, failures that keep the previous file, paths it refuses."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import minidl as M
from minidl import atomic_open, save_checkpoint


def test_atomic_open_keeps_the_usual_file_permissions(tmp_path):
    old = os.umask(0o022); os.umask(old)
    p = tmp_path/'new.json'
    with atomic_open(p) as f: f.write('{}')
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~old  # as open(p, 'w') would make it, not mkstemp's 0600
    p.chmod(0o640)
    with atomic_open(p) as f: f.write('[]')
    assert stat.S_IMODE(p.stat().st_mode) == 0o640  # a replaced file keeps its permissions


def test_atomic_open_failure_keeps_the_previous_file(tmp_path):
    p = tmp_path/'r.json'
    p.write_text('old')
    with pytest.raises(ZeroDivisionError):
        with atomic_open(p) as f: f.write('new'); _ = 1 / 0
    assert p.read_text() == 'old' and [q.name for q in tmp_path.iterdir()] == ['r.json']


@pytest.mark.parametrize('path, exc, contains', [(3, TypeError, 'int'), ('', ValueError, 'empty'),
                                                 (None, TypeError, 'NoneType')])
def test_atomic_open_bad_paths(tmp_path, monkeypatch, path, exc, contains):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc) as info:
        with atomic_open(path) as f: f.write('x')
    assert contains in str(info.value) and 'path' in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path('/proc').is_dir(), reason='needs a folder that refuses new files (Linux /proc)')
def test_folder_that_refuses_new_files_names_the_destination(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        with atomic_open('/proc/ckpt.pt', 'wb') as f: f.write(b'x')
    assert str(e.value.strerror).startswith('cannot write /proc/ckpt.pt: the folder /proc refuses new files')
    assert e.value.filename == '/proc/ckpt.pt' and '.tmp' not in str(e.value)
    with pytest.raises(OSError, match='cannot write /proc/m.pt: the folder /proc refuses new files'):
        save_checkpoint('/proc/m.pt', M.Linear(2, 1))


@pytest.mark.parametrize('tail', ['/', 'sub/'])
def test_a_path_that_ends_with_a_separator_names_a_folder(tmp_path, tail):
    (tmp_path/'sub').mkdir()
    dest = f"{tmp_path}/{tail}" if tail == '/' else f"{tmp_path}/{tail}"
    with pytest.raises(IsADirectoryError, match='names a folder'):
        with atomic_open(f"{tmp_path}/new/" if tail == '/' else dest) as f: f.write('x')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['sub'] and list((tmp_path/'sub').iterdir()) == []


def test_a_name_too_long_for_the_file_system_is_said_about_the_destination(tmp_path):
    with pytest.raises(OSError, match='cannot write .*the path cannot be used'):
        with atomic_open(tmp_path/('x' * 300)) as f: f.write('x')
    assert list(tmp_path.iterdir()) == []


def test_a_failure_before_the_first_write_closes_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    "chmod refused (a file system without permissions): no descriptor leaked, no temporary file, the old file kept."
    from minidl import files
    target = tmp_path / 'out.txt'; target.write_text('old')
    fds = len(os.listdir('/proc/self/fd')) if os.path.isdir('/proc/self/fd') else None
    def refuse(*a, **k): raise PermissionError(1, 'Operation not permitted')
    monkeypatch.setattr(files.os, 'chmod', refuse)
    with pytest.raises(PermissionError):
        with files.atomic_open(target) as f: f.write('new')
    monkeypatch.undo()
    assert target.read_text() == 'old' and sorted(p.name for p in tmp_path.iterdir()) == ['out.txt']
    if fds is not None: assert len(os.listdir('/proc/self/fd')) == fds


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    "The new name reaches the disk too: the folder is fsynced once the temporary file has replaced the target."
    from minidl import files
    synced, sync = [], files._sync_folder
    monkeypatch.setattr(files, '_sync_folder', lambda d: (synced.append((d, (d / 'a.txt').exists())), sync(d)))
    with files.atomic_open(tmp_path / 'a.txt') as f: f.write('x')
    assert synced == [(tmp_path, True)] and (tmp_path / 'a.txt').read_text() == 'x'


def test_atomic_open_refuses_a_write_protected_file_as_open_does(tmp_path, monkeypatch):
    "A rename would replace it without asking the file: refused first, as open(path, 'w') refuses it, nothing changed."
    p = tmp_path / 'ro.txt'
    p.write_text('precious')
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda q, mode, **kw: False if Path(q) == p else real_access(q, mode, **kw))
    with pytest.raises(PermissionError, match='write-protected'):
        with atomic_open(p) as f: f.write('new')
    assert p.read_text() == 'precious' and sorted(x.name for x in tmp_path.iterdir()) == ['ro.txt']


def test_an_interrupt_that_torch_save_turns_into_a_runtime_error_is_an_interrupt_again(tmp_path):
    "torch's writer reraises a Ctrl-C in its write callback as a RuntimeError: the caller's `except KeyboardInterrupt`."
    p = tmp_path / 'f.bin'
    p.write_bytes(b'old')
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(p, 'wb') as f:
            f.write(b'partial')
            try: raise KeyboardInterrupt
            except KeyboardInterrupt: raise RuntimeError('[enforce fail] unexpected pos') from None
    assert p.read_bytes() == b'old' and sorted(x.name for x in tmp_path.iterdir()) == ['f.bin']


@pytest.mark.skipif(sys.platform != 'linux', reason='RLIMIT_FSIZE as on Linux')
def test_a_write_refused_by_the_file_system_names_the_file_and_keeps_the_previous_one(tmp_path):
    "A size limit (as a full disk) refuses the write: the error names the destination, not the hidden temporary file."
    script = f"""
import resource
from minidl import atomic_open
p = {str(tmp_path / 'f.bin')!r}
with atomic_open(p, 'wb') as f: f.write(b'old')
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
try:
    with atomic_open(p, 'wb') as f: f.write(b'x' * 100_000)
except OSError as e: print(type(e).__name__, e.errno, e)
try:  # a small write, refused when the buffer is flushed
    with atomic_open(p, 'w') as f: f.write('y' * 2000)
except OSError as e: print(type(e).__name__, e.errno, e)
"""
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(f"cannot write {tmp_path / 'f.bin'}: the write failed") == 2, out.stdout
    assert (tmp_path / 'f.bin').read_bytes() == b'old' and sorted(x.name for x in tmp_path.iterdir()) == ['f.bin']
