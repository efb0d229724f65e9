"""Helpers every layer needs: one-line errors, atomic file writes, TensorFlow's quiet import.
May import: the standard library only (nothing else of tfchargen)."""
