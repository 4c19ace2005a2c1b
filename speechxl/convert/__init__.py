"""Importers for checkpoints trained elsewhere (fairseq, HF transformers)."""
