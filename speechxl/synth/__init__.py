"""SynthST, the embedded corpus generator: sentences from a bilingual grammar (grammar.py) over a small
lexicon (lexicon.py) with exact German, French and Spanish translations, spoken by espeak-ng through its
ctypes driver (espeak.py) and written in the on-disk layout of MuST-C or CoVoST 2 (synth.py), so that
`speechxl prep` reads it with the same code as the real corpora. It sits above `speechxl.data` (it may
import from it); nothing in `speechxl.data` imports it.
"""
