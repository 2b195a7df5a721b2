"""A file that carries trackers' IDs across a restart (``edge-fpn detect --track --track-state FILE``).

It holds each source's ``Tracker.get_state()`` and the wall-clock time it was saved. A run reads
it before anything loads (a bad file fails at once, and is left as it was) and resumes each tracker
with ``set_state(..., resume_after=seconds since it was saved)``: the new run's frames start a new
clock (a video from 0, a camera's clock after a reboot), and an object lost longer than
``lost_seconds`` by then is let go. The run writes it back when it ends (also on Ctrl-C), through a
temporary file renamed over it, so that a crash mid-write never leaves half a state.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from ...errors import EdgeFpnError

logger = logging.getLogger(__name__)

FORMAT = "edge-fpn tracker state"
VERSION = 1


def check_state_path(path: str) -> None:
    """The file can be written where it is named (its folder exists): checked before any work."""
    if not isinstance(path, str) or not path.strip():
        raise EdgeFpnError(f"--track-state needs a file name, e.g. tracks.json, not {path!r}")
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise EdgeFpnError(f"--track-state {path!r} is a directory; name a file, e.g. {os.path.join(path, 'tracks.json')}")
    if not os.path.isdir(folder):
        raise EdgeFpnError(f"--track-state {path!r}: the folder {folder!r} does not exist; create it or name another file")
    try:  # (a real write: os.access says yes to root, and on a read-only mount; the run's end is too late to learn it)
        handle, probe = tempfile.mkstemp(prefix=".track-state-", suffix=".tmp", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise EdgeFpnError(f"--track-state {path!r}: cannot write in the folder {folder!r} ({exc.strerror}); "
                           "name another file") from None


def read_state_file(path: str, sources: Sequence[str]) -> Optional[Dict[str, Any]]:
    """The saved states for these `sources` (their URIs, in order), or None where there is no file
    yet. A file that is not one, or was saved for other sources, is refused with one sentence."""
    check_state_path(path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeFpnError(f"--track-state {path!r} is not a tracker state file ({type(exc).__name__}); name "
                           "another file (it was left as it is)") from None
    if not (isinstance(saved, dict) and saved.get("format") == FORMAT):
        raise EdgeFpnError(f"--track-state {path!r} is not a tracker state file edge-fpn wrote; name another "
                           "file (it was left as it is)")
    if saved.get("version") != VERSION:
        raise EdgeFpnError(f"--track-state {path!r} was written by another edge-fpn (version {saved.get('version')!r}); "
                           "delete it to start with fresh IDs")
    trackers, saved_sources, saved_at = saved.get("trackers"), saved.get("sources"), saved.get("saved_at")
    if not (isinstance(trackers, list) and isinstance(saved_sources, list) and len(trackers) == len(saved_sources)
            and isinstance(saved_at, (int, float)) and math.isfinite(saved_at)):
        raise EdgeFpnError(f"--track-state {path!r} is damaged (its trackers, sources or time); delete it to start "
                           "with fresh IDs")
    if len(saved_sources) != len(sources):
        raise EdgeFpnError(f"--track-state {path!r} holds the IDs of {len(saved_sources)} source(s) "
                           f"({', '.join(map(str, saved_sources))}), not of these {len(sources)}; name another file")
    if [str(s) for s in saved_sources] != [str(s) for s in sources]:  # (a camera's URI may change: said, not refused)
        logger.warning(f"--track-state {path!r} was saved for {', '.join(map(str, saved_sources))}; resuming its IDs on "
                       f"{', '.join(map(str, sources))}")
    from .state import parsed_state
    for state in trackers:  # (each state checked now, before anything loads: set_state's own checks)
        try:
            parsed_state(state)
        except EdgeFpnError as exc:
            raise EdgeFpnError(f"--track-state {path!r} is damaged ({exc}); delete it to start with fresh IDs") from None
    return saved


def refuse_state_over_outputs(path: str, outputs: Sequence[str]) -> None:
    """The state file must not be one of the run's output files (it would replace it at the end)."""
    real = os.path.realpath(path)
    for output in outputs:
        if os.path.realpath(output) == real:
            raise EdgeFpnError(f"--track-state {path!r} is also the output {output!r}; give the state its own file")


def resume(trackers: Sequence[Any], saved: Dict[str, Any]) -> None:
    """Each tracker takes its saved state, its next frame taken as the time since the file was
    saved after the saved one (a clock that went back, a wrong system time: no gap)."""
    gap = max(0.0, time.time() - float(saved["saved_at"]))
    for tracker, state in zip(trackers, saved["trackers"]):
        tracker.set_state(state, resume_after=gap)
    logger.info(f"tracker state resumed ({_described(trackers)}, saved {gap:.0f} s ago)")


def write_state_file(path: str, trackers: Sequence[Any], sources: Sequence[str]) -> None:
    """The trackers' states to `path`, replacing it whole (a temporary file renamed over it)."""
    saved = {"format": FORMAT, "version": VERSION, "saved_at": time.time(), "sources": [str(s) for s in sources],
             "trackers": [tracker.get_state() for tracker in trackers]}
    folder = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=".track-state-", suffix=".tmp", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(saved, f)
        # (mkstemp makes it private: keep the mode of the file it replaces, else an ordinary file's)
        os.chmod(temporary, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(temporary, path)
        logger.info(f"tracker state saved to {path} ({_described(trackers)})")
    except BaseException as exc:
        try:
            if temporary is not None:
                os.unlink(temporary)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise EdgeFpnError(f"cannot save the tracker state to {path!r} ({exc.strerror}); the run's other "
                               "outputs are written") from None
        raise


def _described(trackers: Sequence[Any]) -> str:
    tracks = sum(tracker.active_tracks + tracker.lost_tracks for tracker in trackers)
    return f"{tracks} track{'s' if tracks != 1 else ''}, next ID {', '.join(str(t.next_id) for t in trackers)}"


def source_names(specs: Sequence[Any]) -> List[str]:
    """How the file names each source: its URI (a Source object by its class)."""
    return [spec if isinstance(spec, str) else type(spec).__name__ for spec in specs]
