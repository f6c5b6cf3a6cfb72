"""engine.fileio (the one writer and the one reader of user text), engine.limits, and the
batch flag types: fast, in-process, no model."""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.errors import InputError, OutputError
from engine.fileio import check_output, check_utf8, read_text, write_atomic, write_text


def test_write_replaces_a_file_atomically_and_keeps_its_mode(tmp_path):
    target = tmp_path / "r.json"
    write_text(target, "one")
    assert target.read_text() == "one"
    target.chmod(0o640)
    write_text(target, "two")
    assert target.read_text() == "two" and target.stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_new_file_mode_is_the_umask_default(tmp_path):
    old = os.umask(0o026)
    try:
        write_text(tmp_path / "r.json", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640


def test_full_disk_mid_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def write(fh):
        fh.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device") as info:
        write_atomic(target, write)
    assert info.value.exit_code == 1
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.json"]


def test_path_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="it is a directory"):
        write_text(tmp_path, "x")
    with pytest.raises(InputError, match="does not exist"):
        write_text(tmp_path / "no" / "r.json", "x")
    with pytest.raises(InputError, match="it is a directory"):
        check_output(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        check_output(tmp_path / "f", directory=True)
    assert check_output(tmp_path / "new", directory=True) == tmp_path / "new"
    assert sorted(os.listdir(tmp_path)) == ["f"]  # the checks leave nothing behind


def test_symlink_target_is_written_and_the_link_stays(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_device_is_written_through_not_replaced():
    before = os.stat("/dev/null")
    assert write_text("/dev/null", "x") == __import__("pathlib").Path("/dev/null")
    after = os.stat("/dev/null")
    assert (before.st_ino, before.st_rdev, before.st_mode) == (after.st_ino, after.st_rdev, after.st_mode)
    if os.path.exists("/dev/full"):
        with pytest.raises(OutputError, match="No space left"):
            write_text("/dev/full", "x" * 100_000)


def test_read_text_is_strict_utf8(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffcafé\n".encode())
    assert read_text(good) == "café\n"  # BOM dropped
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nab\xffc\n")
    with pytest.raises(InputError, match=r"not valid UTF-8 \(byte 0xff at line 2, offset 5\)"):
        read_text(bad, "prompt file")
    with pytest.raises(InputError, match="prompt file not found"):
        read_text(tmp_path / "none", "prompt file")
    with pytest.raises(InputError, match="is a directory"):
        read_text(tmp_path, "prompt file")


def test_check_utf8_names_the_byte():
    assert check_utf8("héllo", "-p") == "héllo"
    with pytest.raises(InputError, match=r"-p is not valid UTF-8 \(byte 0xff at character 1\)"):
        check_utf8("a\udcffb", "-p")


# -- limits --------------------------------------------------------------------------------
def _lm(max_pos=None, heads=4):
    config = {} if max_pos is None else {"max_position_embeddings": max_pos}
    return SimpleNamespace(config=config, info=SimpleNamespace(model_id="m", num_heads=heads))


def test_prompt_past_the_context_length_is_refused():
    from engine.limits import check_prompt

    check_prompt(_lm(100), 1, 100, 100, free=10**12)
    with pytest.raises(InputError, match="101 tokens but m takes at most 100"):
        check_prompt(_lm(100), 1, 101, 101, free=10**12)
    check_prompt(_lm(None), 1, 10**5, 10**5, free=10**15)  # no context length known: memory only
    from engine.limits import context_length

    assert context_length({"n_positions": 1024}) == 1024  # GPT-2's name
    assert context_length({"text_config": {"max_position_embeddings": 32768}}) == 32768


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_process_memory_reads_this_process():
    import numpy as np

    from engine.limits import process_memory

    before = process_memory("VmRSS")
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    after = process_memory("VmRSS")
    assert before is not None and after is not None
    assert after - before > 48 * 2**20  # pages the array touched are resident (kB in /proc -> bytes)
    peak = process_memory("VmHWM")
    assert peak is not None and peak >= after
    assert process_memory("NoSuchField") is None
    del block


def test_attention_memory_estimate_scales_with_the_budget():
    from engine.limits import BYTES_PER_SCORE, SHARE_OF_FREE_MEMORY, attention_bytes, check_prompt

    need = attention_bytes(2, 4, 1000, 1000)
    assert need == 2 * 4 * 1000 * 1000 * BYTES_PER_SCORE * 2
    check_prompt(_lm(), 2, 1000, 1000, free=int(need / SHARE_OF_FREE_MEMORY) + 1)
    with pytest.raises(InputError, match=r"2 prompts of up to 1,000 tokens need about 0\.1 GB") as info:
        check_prompt(_lm(), 2, 1000, 1000, free=int(need / SHARE_OF_FREE_MEMORY) - 10**6)
    fits = int(str(info.value).split("at most about ")[1].split(" ")[0].replace(",", ""))
    assert 900 < fits < 1000  # the length that would fit, from the same estimate


# -- flag types ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,ok", [("1", True), ("1000", True), ("0", False), ("1001", False), ("x", False)])
def test_integer_flag(text, ok):
    from lazarus_tui.batch.flags import integer

    parse = integer(1, 1000)
    if ok:
        assert parse(text) == int(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize("text,ok", [("0.5", True), ("1e-9", True), ("0", False), ("nan", False), ("inf", False),
                                     ("-inf", False), ("2", False)])
def test_real_flag_is_finite_and_in_range(text, ok):
    from lazarus_tui.batch.flags import real

    parse = real(0, 1, lo_open=True)
    if ok:
        assert parse(text) == float(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_flag_ranges_match_the_request_models():
    """A value the flag accepts never fails the request model's own limits (no pydantic text)."""
    from engine.results.analyze import AnalyzeRequest
    from engine.results.generate import GenerateRequest
    from engine.results.patch import PatchRequest
    from lazarus_tui.batch import flags

    AnalyzeRequest(prompt="x", top_k=flags.top_k("1000"), layer_step=1)
    GenerateRequest(prompts=["x"], max_tokens=flags.max_tokens(str(flags.MAX_TOKENS)),
                    temperature=flags.temperature("100"))
    PatchRequest(source="a", target="b", layers=[0], top_k=flags.top_k("1000"))
