"""The served versions of one model and their policy (TF Serving's AspiredVersionsManager in
small): which versions of the export base to serve ("latest", "all" or listed numbers), loading
and warming them up as they appear on disk, unloading those that leave it, and the
status/metadata replies."""

from __future__ import annotations

import os
import threading
import time

from tfchargen.savedmodel import locate
from tfchargen.serving.config import POLL_SECONDS
from tfchargen.serving.errors import ServerError, log
from tfchargen.serving.servable import Servable


class ModelManager:
    """The served versions of one model: loads, warms up, switches and unloads them.

    Args:
        base: an export base (``models/chargen``) or a single version's directory.
        name: the model name clients ask for.
        policy: "latest", "all" or a tuple of version numbers (``--versions``).
        servable_kwargs: passed to :class:`Servable` (batching).

    >>> m = ModelManager("models/chargen", "chargen").load_initial()  # doctest: +SKIP
    >>> m.get(None).version  # doctest: +SKIP
    1
    """

    def __init__(self, base: str, name: str, policy="latest", poll_seconds: float = POLL_SECONDS,
                 **servable_kwargs):
        self.base, self.name, self.policy, self.poll_seconds = base, name, policy, poll_seconds
        self.servable_kwargs = servable_kwargs
        self.single = os.path.exists(os.path.join(base, "saved_model.pb"))
        self._servables: dict[int, Servable] = {}
        self.version_labels: dict[str, int] = {}  # label -> version (model config's version_labels)
        self._states: dict[int, tuple[str, str]] = {}  # version -> (state, error message)
        self._failed: set[int] = set()  # versions that did not load: not retried until they change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def _wanted(self) -> dict[int, str]:
        if self.single:
            name = os.path.basename(os.path.normpath(self.base))
            return {int(name) if name.isdigit() else 1: self.base}
        found = locate.complete_versions(self.base)
        if self.policy == "latest":
            ok = sorted(v for v in found if v not in self._failed)
            return {ok[-1]: found[ok[-1]]} if ok else {}
        if self.policy == "all":
            return found
        return {v: p for v, p in found.items() if v in self.policy}

    def poll(self) -> None:
        """One pass: load wanted versions that are not loaded, unload the others."""
        wanted = self._wanted()
        for version in sorted(set(wanted) - set(self._servables) - self._failed):
            self._load(version, wanted[version])
        if self.policy == "latest":  # keep the newest that loaded
            wanted = dict(sorted((v, p) for v, p in wanted.items() if v in self._servables)[-1:]) or \
                dict(sorted(self._servables.items())[-1:])
        for version in sorted(set(self._servables) - set(wanted)):
            if self.policy == "latest" and not (set(wanted) & set(self._servables)):
                continue  # nothing newer loaded: keep serving what we have
            self._unload(version)
        still_there = set(locate.complete_versions(self.base))
        self._failed &= still_there | ({next(iter(wanted))} if self.single and wanted else set())

    def _load(self, version: int, path: str) -> None:
        with self._lock:
            self._states[version] = ("LOADING", "")
        t = time.monotonic()
        try:
            servable = Servable(path, version, **self.servable_kwargs)
            replayed = servable.warm_up()
        except Exception as e:  # a damaged or foreign version: report it, keep serving the others
            from tfchargen.common.errors import one_line

            message = one_line(e)
            with self._lock:
                self._states[version] = ("END", message)
                self._failed.add(version)
            log(f"tfchargen serve: version {version} failed to load: {message}")
            return
        with self._lock:
            self._servables[version] = servable
            self._states[version] = ("AVAILABLE", "")
        log(f"tfchargen serve: loaded {self.name} version {version} ({replayed} warmup requests, "
            f"{time.monotonic() - t:.1f} s)")

    def _unload(self, version: int) -> None:
        with self._lock:
            servable = self._servables.pop(version)
            self._states[version] = ("END", "")
        servable.stop()  # queued requests still run; callers holding it finish with it
        log(f"tfchargen serve: unloaded {self.name} version {version}")

    def load_initial(self) -> "ModelManager":
        self.poll()
        if not self._servables:
            errors = [m for s, m in self._states.values() if m]
            raise ValueError(f"no version of {self.base} could be loaded" + (f": {errors[-1]}" if errors else
                             " (no numbered version directory holds a saved_model.pb)"))
        return self

    def start_polling(self) -> None:
        if self.single:
            return

        def loop():
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.poll()
                except Exception as e:  # never let the poller die: the next pass retries
                    log(f"tfchargen serve: polling {self.base} failed: {e!r}")
        self._thread = threading.Thread(target=loop, name="version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        for servable in list(self._servables.values()):
            servable.stop()

    def servables(self) -> dict[int, Servable]:
        with self._lock:
            return dict(self._servables)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a ModelSpec asks for: a version, a label (config's version_labels) or
        the latest; TF Serving's ServerCore errors otherwise."""
        if not name:
            raise ServerError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        if label is not None:
            version = self.version_for_label(name, label)
        with self._lock:
            if name == self.name:
                if version is None and self._servables:
                    return self._servables[max(self._servables)]
                if version in self._servables:
                    return self._servables[version]
        which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServerError("NOT_FOUND", f"Servable not found for request: {which}")

    def version_for_label(self, name: str, label: str) -> int:
        """server_core.cc GetModelVersionForLabel."""
        if name == self.name and label in self.version_labels:
            return self.version_labels[label]
        raise ServerError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")

    def status(self, name: str, version: int | None = None, label: str | None = None):
        """A GetModelStatusResponse (every known version, or the one asked for). Like TF
        Serving's GetModelStatusImpl, a version label is ignored."""
        from tensorflow_serving.apis import get_model_status_pb2

        with self._lock:
            states = dict(self._states)
        if name != self.name or (version is not None and version not in states):
            raise ServerError("NOT_FOUND", f"Could not find any versions of model {name}" if version is None
                              else f"Could not find version {version} of model {name}")
        reply = get_model_status_pb2.GetModelStatusResponse()
        enum = get_model_status_pb2.ModelVersionStatus.State
        for v in sorted(states, reverse=True):
            if version is not None and v != version:
                continue
            state, message = states[v]
            status = reply.model_version_status.add(version=v, state=enum.Value(state))
            if message:
                status.status.error_code = 2  # UNKNOWN
                status.status.error_message = message
        return reply

    def metadata(self, name: str, version: int | None = None, label: str | None = None):
        """A GetModelMetadataResponse with the version's signature_def."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        servable = self.get(name, version, label)
        reply = get_model_metadata_pb2.GetModelMetadataResponse()
        reply.model_spec.name = name
        reply.model_spec.version.value = servable.version
        reply.metadata["signature_def"].Pack(servable.signature_defs)
        return reply
