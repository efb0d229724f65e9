"""Helpers every layer needs: one-line errors, atomic file writes, TensorFlow's quiet import.
May import: nothing of tfchargen (the standard library only)."""
