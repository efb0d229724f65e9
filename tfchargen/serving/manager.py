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


def not_found(name: str, version: int | None) -> ServerError:
    """TF Serving's NOT_FOUND for a model or version it does not serve."""
    which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return ServerError("NOT_FOUND", f"Servable not found for request: {which}")


class ModelManager:
    """The served versions of one model: loads, warms up, switches and unloads them.

    Args:
        base: an export base (``models/chargen``) or a single version's directory.
        name: the model name clients ask for.
        policy: "latest" (= ("latest", 1)), ("latest", n), "all" or a tuple of version
            numbers (``--versions``, model_version_policy).
        labels: version_labels, {label: version}: requests may name a version by label.
        warmup: replay each version's warmup records before it serves.
        servable_kwargs: passed to :class:`Servable` (batching, xla).

    >>> m = ModelManager("models/chargen", "chargen").load_initial()  # doctest: +SKIP
    >>> m.get(None).version  # doctest: +SKIP
    1
    """

    def __init__(self, base: str, name: str, policy="latest", poll_seconds: float = POLL_SECONDS,
                 labels: dict | None = None, warmup: bool = True, **servable_kwargs):
        self.base, self.name, self.poll_seconds = base, name, poll_seconds
        self.policy = ("latest", 1) if policy == "latest" else policy
        self.labels = dict(labels or {})  # version_labels: label -> version
        self.warmup = warmup  # replay assets.extra/tf_serving_warmup_requests (--enable_model_warmup)
        self.servable_kwargs = servable_kwargs
        self.single = os.path.exists(os.path.join(base, "saved_model.pb"))
        self._servables: dict[int, Servable] = {}
        self._states: dict[int, tuple[str, str]] = {}  # version -> (state, error message)
        self._failed: set[int] = set()  # versions that did not load: not retried until they change
        self._lock = threading.Lock()
        self._polling = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    @property
    def latest(self) -> int:
        """n of a ``latest { num_versions: n }`` policy, else 0."""
        return self.policy[1] if isinstance(self.policy, tuple) and self.policy[0] == "latest" else 0

    def _wanted(self) -> dict[int, str]:
        if self.single:
            name = os.path.basename(os.path.normpath(self.base))
            return {int(name) if name.isdigit() else 1: self.base}
        found = locate.complete_versions(self.base)
        if self.policy == "all":
            return found
        if self.latest:
            ok = sorted(v for v in found if v not in self._failed)[-self.latest:]
            return {v: found[v] for v in ok}
        return {v: p for v, p in found.items() if v in self.policy}

    def poll(self) -> None:
        """One pass: load wanted versions that are not loaded, unload the others. With a
        ``latest`` policy, versions go only once a newer wanted one is serving (TF Serving's
        AvailabilityPreservingPolicy)."""
        with self._polling:  # the poller and a re-read model config may both poll
            self._poll()

    def _poll(self) -> None:
        wanted = self._wanted()
        for version in sorted(set(wanted) - set(self._servables) - self._failed):
            self._load(version, wanted[version])
        keep = set(wanted) & set(self._servables)
        if self.latest and not keep and self._servables:
            keep = {max(self._servables)}  # nothing wanted loaded: keep serving the newest we have
        for version in sorted(set(self._servables) - keep):
            self._unload(version)
        still_there = set(locate.complete_versions(self.base))
        self._failed &= still_there | ({next(iter(wanted))} if self.single and wanted else set())

    def _load(self, version: int, path: str) -> None:
        with self._lock:
            self._states[version] = ("LOADING", "")
        t = time.monotonic()
        try:
            servable = Servable(path, version, **self.servable_kwargs)
            replayed = servable.warm_up() if self.warmup else 0
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
        if self.single or self.poll_seconds <= 0:  # 0: versions are looked for at start only
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

    def version_of(self, label: str) -> int:
        """The version a label names (ServerCore::GetModelVersionForLabel's error otherwise)."""
        if label not in self.labels:
            raise ServerError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
        return self.labels[label]

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        if not name:
            raise ServerError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        if label is not None and name == self.name:
            version = self.version_of(label)
        with self._lock:
            if name == self.name:
                if version is None and self._servables:
                    return self._servables[max(self._servables)]
                if version in self._servables:
                    return self._servables[version]
        raise not_found(name, version)

    def status(self, name: str, version: int | None = None, label: str | None = None):
        """A GetModelStatusResponse (every known version, or the one asked for). A ``label``
        is ignored, as GetModelStatusImpl ignores ``version_label``: every version."""
        from tensorflow_serving.apis import get_model_status_pb2

        with self._lock:
            states = dict(self._states)
        if name != self.name or not states:
            raise ServerError("NOT_FOUND", f"Could not find any versions of model {name}") if version is None \
                else ServerError("NOT_FOUND", f"Could not find version {version} of model {name}")
        if version is not None and version not in states:
            raise ServerError("NOT_FOUND", f"Could not find version {version} of model {name}")
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
