"""espeak-ng text-to-speech through ctypes, using the library and voice data bundled by `espeakng-loader`.

No system package and no root: the shared library and `espeak-ng-data` ship inside the wheel. libespeak-ng is
process-global (one voice, one callback), so use one engine per process (`get_espeak()`) from one thread;
multiprocessing workers each get their own. Nothing else in the process may hold the library open, or the
reload that resets it (see `Espeak`) would not take place.
API: espeak-ng's `speak_lib.h` (synchronous mode, audio delivered to a callback) and `espeak_ng.h`
(`espeak_ng_SetRandSeed`, which makes the noise sources of the synthesiser repeatable).
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
from pathlib import Path

import espeakng_loader
import numpy as np

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
# espeak_PARAMETER
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Espeak:
    """espeak-ng as a pure function of its arguments: `synthesize` returns 16-bit samples at `sample_rate`.

    libespeak-ng keeps synthesis state in C statics (glottal flutter phase, gain control, echo buffer) that no
    API call resets, so the same call would give different samples depending on what was spoken before. To
    make audio depend only on its own arguments (same seed -> same bytes, whatever the job scheduling), each
    call loads a fresh copy of the library and unloads it afterwards (about 3 ms).
    """

    def __init__(self) -> None:
        self._library_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        self._chunks: list[bytes] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib = self._open()
        self._close(lib)

    def _open(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(self._library_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            self._close(lib)
            raise RuntimeError(f"espeak-ng failed to initialise with data at {self._data_path.decode()}")
        self.sample_rate: int = rate
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    @staticmethod
    def _close(lib: ctypes.CDLL) -> None:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)  # the last handle: the next dlopen starts from pristine statics

    def _collect(self, wav, n_samples: int, _events) -> int:
        if n_samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, 2 * n_samples))
        return 0  # 0 = continue synthesis

    def synthesize(
        self, text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50, seed: int = 0
    ) -> np.ndarray:
        """Speak `text` with `voice` ("en-us", "en+m3", "de+f2", ...): int16 samples at `self.sample_rate`.

        rate: words per minute (80-450); pitch, pitch_range: 0-100 (espeak default 50); seed: the synthesiser's
        noise generator. The result depends only on these arguments.
        """
        lib = self._open()
        try:
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, 100)):
                lib.espeak_SetParameter(parameter, value, 0)
            lib.espeak_ng_SetRandSeed(seed)
            encoded = text.encode("utf-8") + b"\0"
            self._chunks = []
            status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if status != _EE_OK:
                raise RuntimeError(f"espeak-ng failed (status {status}) on {text!r}")
            return np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        finally:
            self._close(lib)


@functools.cache
def get_espeak() -> Espeak:
    """The process's espeak-ng engine, initialised on first use."""
    return Espeak()


def voice_variants() -> list[str]:
    """Names of the voice variants shipped with the data ("m1", "f2", ...), usable as "<language>+<variant>"."""
    return sorted(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir())
