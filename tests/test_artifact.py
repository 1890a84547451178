"""Artifact checks on real files: binaries compiled here, and foreign headers made byte by byte."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pytest

from gbdeploy import artifact
from gbdeploy.artifact import ArtifactInfo, check, uname_machine
from gbdeploy.errors import OperationFailed, UsageError
from gbdeploy_sandbox.service import build_service, compiler

HERE = os.uname().machine

PROGRAM = "int main(void) { return 0; }\n"


def compiled(directory: Path, name: str, *flags: str) -> Path:
    source = directory / "program.c"
    source.write_text(PROGRAM)
    out = directory / name
    subprocess.run([compiler(), *flags, "-o", str(out), str(source)], check=True)
    return out


def elf_header(
    *,
    bits: int,
    big_endian: bool,
    e_type: int,
    e_machine: int,
    interpreter: bytes | None = None,
) -> bytes:
    """An ELF file header (and, with `interpreter`, one PT_INTERP program header and its path)."""
    order = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 2 if big_endian else 1, 1]) + bytes(9)
    header_size, entry_size = (64, 56) if bits == 64 else (52, 32)
    phnum = 1 if interpreter else 0
    phoff = header_size if interpreter else 0
    address = "Q" if bits == 64 else "I"
    header = ident + struct.pack(
        order + f"HHI{address}{address}{address}IHHHHHH",
        e_type,
        e_machine,
        1,  # e_version
        0x400000,  # e_entry
        phoff,
        0,  # e_shoff
        0,  # e_flags
        header_size,
        entry_size,
        phnum,
        0,
        0,
        0,
    )
    assert len(header) == header_size
    if not interpreter:
        return header
    path_at = header_size + entry_size
    if bits == 64:
        segment = struct.pack(
            order + "IIQQQQQQ", 3, 4, path_at, 0, 0, len(interpreter), len(interpreter), 1
        )
    else:
        segment = struct.pack(
            order + "IIIIIIII", 3, path_at, 0, 0, len(interpreter), len(interpreter), 4, 1
        )
    return header + segment + interpreter


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- real binaries ------------------------------------------------------------------------------
@pytest.mark.slow  # the C compiler
def test_the_compiled_stand_in_service_is_an_executable_for_this_machine(tmp_path):
    info = check(build_service(tmp_path / "botserver", "c0ffee1"))
    assert info.machine == uname_machine(HERE)
    assert info.matches(HERE)
    assert info.bits == 64
    assert info.interpreter and info.interpreter.startswith("/")
    assert info.size == (tmp_path / "botserver").stat().st_size


@pytest.mark.slow  # the C compiler
def test_a_padded_stand_in_still_passes(tmp_path):
    info = check(build_service(tmp_path / "botserver", "c0ffee1", pad_to=3 << 20))
    assert info.matches(HERE)


@pytest.mark.slow  # the C compiler
@pytest.mark.parametrize(
    ("flags", "pie"),
    [(("-static",), False), (("-static-pie",), True)],
    ids=["static", "static-pie"],
)
def test_static_executables_pass(tmp_path, flags, pie):
    info = check(compiled(tmp_path, "program", *flags))
    assert (info.pie, info.interpreter) == (pie, None)
    assert info.matches(HERE)
    assert "static" in info.description


@pytest.mark.slow  # the C compiler
@pytest.mark.parametrize(
    ("flags", "what"),
    [(("-shared", "-fPIC"), "a shared library (.so)"), (("-c",), "an object file (.o)")],
    ids=["shared-library", "object-file"],
)
def test_elf_files_that_are_not_programs_are_refused(tmp_path, flags, what):
    path = compiled(tmp_path, "not-a-program", *flags)
    with pytest.raises(UsageError) as raised:
        check(path)
    assert f"{path} is {what}, not an executable" in str(raised.value)


# --- not ELF at all -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n", "HTML"),
        (b"\n  <html><head><title>Sign in</title></head></html>", "HTML"),
        (b'#!/bin/sh\nexec ./botserver-real "$@"\n', "a script (#!/bin/sh)"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "text"),
        (b'{"message": "Not Found"}', "JSON"),
        (b"\x1f\x8b\x08\x00" + bytes(60), "compressed"),
        (b"PK\x03\x04" + bytes(60), "zip archive"),
        (b"MZ\x90\x00" + bytes(60), "Windows or macOS executable"),
        (b"\x00\xff\xfe\x01" * 16, "unknown binary data starting 00 ff fe 01"),
    ],
    ids=["html", "html-indented", "script", "lfs-pointer", "json", "gzip", "zip", "exe", "data"],
)
def test_files_that_are_not_elf_are_refused_with_what_they_look_like(tmp_path, content, says):
    path = write(tmp_path / "botserver", content)
    with pytest.raises(UsageError) as raised:
        check(path)
    message = str(raised.value)
    assert f"artifact {path} is not an ELF executable" in message
    assert says in message
    assert raised.value.exit_code == 2


def test_an_empty_file_is_refused(tmp_path):
    path = write(tmp_path / "botserver", b"")
    with pytest.raises(UsageError) as raised:
        check(path)
    assert "is empty (0 bytes)" in str(raised.value)
    assert raised.value.exit_code == 2


def test_a_missing_path_and_a_directory_are_refused(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        check(tmp_path / "nope")
    with pytest.raises(UsageError, match="is a directory"):
        check(tmp_path)


def test_an_unreadable_file_is_refused(tmp_path):
    path = write(tmp_path / "botserver", b"\x7fELF")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make it unreadable another way
        path.unlink()
        path.symlink_to(path)  # a loop: open() fails with ELOOP
    with pytest.raises(UsageError) as raised:
        check(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    "content",
    [b"\x7fELF", b"\x7fELF\x02\x01\x01" + bytes(40), b"\x7fELF\x09\x01\x01" + bytes(60)],
    ids=["magic-only", "short-64-bit", "bad-class"],
)
def test_a_truncated_or_damaged_header_is_refused(tmp_path, content):
    with pytest.raises(UsageError, match="truncated or damaged ELF header"):
        check(write(tmp_path / "botserver", content))


# --- foreign machines, headers made byte by byte ------------------------------------------------
@pytest.mark.parametrize(
    ("bits", "big_endian", "e_machine", "machine", "runs_on", "not_on"),
    [
        (32, False, 40, "armv7l", ["armv7l", "armv6l", "armv8l"], ["aarch64", "x86_64"]),
        (64, False, 183, "aarch64", ["aarch64", "arm64"], ["armv7l", "x86_64"]),
        (64, True, 183, "aarch64_be", ["aarch64_be"], ["aarch64"]),
        (64, False, 243, "riscv64", ["riscv64"], ["x86_64", "riscv32"]),
        (32, False, 3, "i686", ["i686", "i386"], ["x86_64"]),
        (64, False, 62, "x86_64", ["x86_64", "amd64", " x86_64\n"], ["i686", "aarch64"]),
        (64, False, 21, "ppc64le", ["ppc64le"], ["ppc64"]),
        (64, True, 22, "s390x", ["s390x"], ["x86_64"]),
    ],
    ids=["arm32", "aarch64", "aarch64-be", "riscv64", "i386", "x86_64", "ppc64le", "s390x"],
)
def test_the_machine_comes_from_e_machine_in_uname_m_spelling(
    tmp_path, bits, big_endian, e_machine, machine, runs_on, not_on
):
    header = elf_header(bits=bits, big_endian=big_endian, e_type=2, e_machine=e_machine)
    info = check(write(tmp_path / "botserver", header + bytes(256)))
    assert (info.machine, info.bits, info.big_endian) == (machine, bits, big_endian)
    assert all(info.matches(name) for name in runs_on)
    assert not any(info.matches(name) for name in not_on)


@pytest.mark.parametrize("bits", [32, 64])
def test_a_foreign_pie_with_an_interpreter_is_an_executable(tmp_path, bits):
    loader = b"/lib/ld-linux-armhf.so.3\0" if bits == 32 else b"/lib/ld-linux-riscv64-lp64d.so.1\0"
    header = elf_header(
        bits=bits,
        big_endian=False,
        e_type=3,
        e_machine=40 if bits == 32 else 243,
        interpreter=loader,
    )
    info = check(write(tmp_path / "botserver", header))
    assert info.pie
    assert info.interpreter == loader.rstrip(b"\0").decode()


def test_a_foreign_shared_library_is_refused(tmp_path):
    header = elf_header(bits=32, big_endian=False, e_type=3, e_machine=40)
    with pytest.raises(UsageError, match=r"shared library \(\.so\)"):
        check(write(tmp_path / "libbot.so", header))


def test_an_unknown_machine_is_named_by_its_number_and_matches_nothing_known(tmp_path):
    header = elf_header(bits=64, big_endian=False, e_type=2, e_machine=9999)
    info = check(write(tmp_path / "botserver", header))
    assert info.machine == "elf-machine-9999"
    assert not info.matches(HERE)


def test_artifact_info_describes_itself():
    info = ArtifactInfo(
        Path("b"), 10, "aarch64", 183, 64, False, True, "/lib/ld-linux-aarch64.so.1"
    )
    assert (
        info.description
        == "ELF 64-bit aarch64 PIE executable (interpreter /lib/ld-linux-aarch64.so.1)"
    )


def test_an_artifact_for_another_machine_is_refused_naming_both(tmp_path):
    header = elf_header(bits=64, big_endian=False, e_type=2, e_machine=183)
    info = check(write(tmp_path / "botserver", header))
    info.require_machine("aarch64\n", "system")  # runs there: no error
    with pytest.raises(UsageError) as raised:
        info.require_machine("x86_64\n", "system")
    message = str(raised.value)
    assert "ELF 64-bit aarch64 executable" in message
    assert "system is x86_64 (uname -m)" in message
    assert raised.value.exit_code == 2


def test_offsets_past_the_end_of_a_damaged_file_are_not_followed(tmp_path):
    header = bytearray(elf_header(bits=64, big_endian=False, e_type=3, e_machine=62))
    struct.pack_into("<QHH", header, 32, 2**64 - 1, 0, 0)  # e_phoff far beyond the file
    struct.pack_into("<HH", header, 54, 56, 3)
    with pytest.raises(UsageError, match="shared library"):
        check(write(tmp_path / "botserver", bytes(header)))


# --- the fingerprint ------------------------------------------------------------------------------
def test_a_prefetched_fingerprint_is_read_once_and_only_while_the_file_is_the_same(
    tmp_path, mocker
):
    path = tmp_path / "botserver"
    path.write_bytes(b"build one" * 1000)
    reads = mocker.spy(artifact, "file_sha256")

    artifact.prefetch_fingerprint(path)
    first = artifact.fingerprint(path)
    assert first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reads.call_count == 1  # the deploy waited for the background hash

    path.write_bytes(b"build two, longer" * 1000)  # rebuilt after the prefetch
    second = artifact.fingerprint(path)
    assert second.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != first.sha256
    assert reads.call_count == 2


def test_a_prefetch_of_a_missing_artifact_leaves_the_error_to_the_deploy(tmp_path):
    missing = tmp_path / "not built"
    artifact.prefetch_fingerprint(missing)
    with pytest.raises(OperationFailed) as raised:
        artifact.fingerprint(missing)
    assert f"cannot read the artifact {missing}" in str(raised.value)
