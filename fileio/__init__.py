"""Atomic file writes: every checkpoint, cache, report and export goes through a temporary file in the target's
folder, is flushed to disk, and replaces the target with one rename, so a crash or a kill never leaves a
half-written file and the previous version survives until the new one is complete.

This package imports nothing of ours, so every other package may use it.
"""
from fileio.atomic import link_atomically, torch_save_atomically, write_atomically, write_bytes_atomically, \
    write_json_atomically, write_text_atomically

__all__ = ["link_atomically", "torch_save_atomically", "write_atomically", "write_bytes_atomically",
           "write_json_atomically", "write_text_atomically"]
