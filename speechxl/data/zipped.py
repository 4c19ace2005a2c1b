"""fairseq S2T's zipped data: a manifest `audio` of `x.zip:<byte offset>:<byte length>` names one member of an
uncompressed (ZIP_STORED) archive, an `.npy` feature matrix (fbank80.zip) or an encoded audio file (flac.zip:
flac, wav, ogg), as fairseq's `examples/speech_to_text/data_utils.py` (create_zip, get_zip_manifest) writes them.

The byte range must be exactly one member's data: the archive's central directory is read once per zip (and
cached per process), every member's data offset is taken from its local header, and a range that is not a
member's, or a member that is compressed, is an error naming the manifest line. Features are returned as stored.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from speechxl.errors import DataError

SAMPLE_RATE = 16000
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's structFileHeader: 30 bytes
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class Member:
    name: str
    length: int  # stored bytes (== file size: ZIP_STORED)
    compressed: bool

    @property
    def holds_features(self) -> bool:
        return self.name.lower().endswith(".npy")


def split_zip_slice(audio: str) -> tuple[str, int, int] | None:
    """`x.zip:offset:length` -> (path, offset, length); anything else -> None."""
    parts = audio.rsplit(":", 2)
    if len(parts) == 3 and parts[0].lower().endswith(".zip") and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return None


@functools.lru_cache(maxsize=64)
def zip_members(path: str, mtime_ns: int) -> dict[int, Member]:
    """Data offset -> member, for every member of the archive at `path` (mtime in the key: a rewritten zip
    is read again)."""
    members: dict[int, Member] = {}
    with open(path, "rb") as raw, zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            raw.seek(info.header_offset)
            header = raw.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"member {info.filename}: no local header at byte {info.header_offset}")
            name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
            offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            members[offset] = Member(info.filename, info.compress_size, info.compress_type != zipfile.ZIP_STORED)
    return members


def resolve(path: str, base_dir: str | os.PathLike | None) -> str:
    return path if base_dir is None or os.path.isabs(path) else os.path.join(base_dir, path)


def find_member(
    spec: str, base_dir: str | os.PathLike | None, *, manifest: str | os.PathLike | None = None, line: int | None = None
) -> tuple[str, int, Member]:
    """The archive path, data offset and member that `spec` (`x.zip:offset:length`) names, checked."""
    parsed = split_zip_slice(spec)
    if parsed is None:
        raise ValueError(f"{spec!r} is not a zip byte range")
    path, offset, length = parsed
    path = resolve(path, base_dir)

    def fail(message: str) -> DataError:
        return DataError(manifest if manifest is not None else path, f"audio {spec}: {message}", line)

    if not os.path.isfile(path):
        raise fail(f"no such zip file {path}")
    try:
        members = zip_members(path, os.stat(path).st_mtime_ns)
    except (zipfile.BadZipFile, OSError) as err:
        raise fail(f"not a readable zip archive ({err})") from err
    member = members.get(offset)
    if member is None:
        raise fail(
            f"byte offset {offset} is not the start of any member's data in {path} "
            f"(a bad byte range, or a manifest written for another zip)"
        )
    if member.compressed:
        raise fail(
            f"member {member.name} is compressed; fairseq's byte ranges need an uncompressed "
            "(ZIP_STORED) archive, as its create_zip writes"
        )
    if length != member.length:
        raise fail(f"byte length {length} does not match member {member.name} ({member.length} bytes)")
    return path, offset, member


def holds_features(spec: str, base_dir: str | os.PathLike | None, **where) -> bool:
    """Whether the zip member of `spec` is a stored feature matrix (.npy) rather than encoded audio."""
    return find_member(spec, base_dir, **where)[2].holds_features


def load_zip_entry(
    spec: str, base_dir: str | os.PathLike | None, *, manifest: str | os.PathLike | None = None, line: int | None = None
) -> tuple[str, np.ndarray]:
    """("fbank", (frames, bins) float32 as stored) or ("wave", float32 mono 16 kHz samples) of a zip member."""
    path, offset, member = find_member(spec, base_dir, manifest=manifest, line=line)

    def fail(message: str) -> DataError:
        return DataError(manifest if manifest is not None else path, f"audio {spec}: {message}", line)

    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(member.length)
    if len(data) != member.length:
        raise fail(f"zip ends before the member's {member.length} bytes")
    if data.startswith(_NPY_MAGIC):
        try:
            feats = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as err:
            raise fail(f"cannot read the .npy member {member.name} ({err})") from err
        if feats.ndim != 2:
            raise fail(f"feature matrix {member.name} has shape {feats.shape}, expected (frames, bins)")
        return "fbank", np.ascontiguousarray(feats, dtype=np.float32)
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise fail(f"member {member.name} is neither a .npy matrix nor decodable audio ({err})") from err
    wave = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        wave = soxr.resample(wave, rate, SAMPLE_RATE)
    return "wave", np.ascontiguousarray(wave, dtype=np.float32)
