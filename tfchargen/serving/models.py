"""Every model one server serves (TF Serving's ServerCore in small): a ModelManager per name,
from ``--model_config_file`` (re-read every ``--model_config_file_poll_wait_seconds``) or one
export base. REST and gRPC call :class:`Models` as they call one ModelManager: ``get``,
``status`` and ``metadata`` take ``(name, version=None, label=None)`` and dispatch by name;
an unknown name is TF Serving's NOT_FOUND."""

from __future__ import annotations

import threading

from tfchargen.serving.errors import ServerError, log
from tfchargen.serving.manager import ModelManager, not_found


def check_labels(name: str, labels: dict, available: set, existing: dict, allow_unavailable: bool) -> None:
    """ServerCore::UpdateModelVersionLabelMap's rule, checked before a config applies: a label
    must name an AVAILABLE version, unless ``allow_unavailable``
    (``--allow_version_labels_for_unavailable_models``) and the label is new or keeps its
    version. So without that flag a config with labels cannot start a server: labels are
    added by a re-read config once their versions serve (as TF Serving's docs say)."""
    for label, version in sorted(labels.items()):
        moved = label in existing and existing[label] != version
        if version not in available and not (allow_unavailable and not moved):
            raise ValueError(f"Request to assign label to version {version} of model {name}, which is not "
                             f"currently available for inference (version_labels {{ key: {label!r} }})")


class Models:
    """The served models by name.

    Args:
        managers: the ModelManagers, in config order (the first is the default model: the
            page at ``/`` shows it).
        make: ``make(spec) -> ModelManager`` for a model a re-read config adds
            (:meth:`apply`); None: the set of models is fixed.
        allow_unavailable_labels: ``--allow_version_labels_for_unavailable_models``.

    >>> models = Models([ModelManager("/models/chargen", "chargen")]).load_initial()  # doctest: +SKIP
    >>> models.get("chargen", label="stable").version  # doctest: +SKIP
    1
    """

    def __init__(self, managers: list[ModelManager], make=None, allow_unavailable_labels: bool = False):
        self._managers = {m.name: m for m in managers}
        self._make, self.allow_unavailable_labels = make, allow_unavailable_labels
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    @property
    def name(self) -> str:
        """The default model's name."""
        return next(iter(self.managers()))

    def managers(self) -> dict[str, ModelManager]:
        with self._lock:
            return dict(self._managers)

    def _manager(self, name: str, version: int | None, label: str | None) -> ModelManager:
        if not name:
            raise ServerError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        manager = self.managers().get(name)
        if manager is None:
            if label is not None:  # ServerCore resolves the label first: no label map for this name
                raise ServerError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            raise not_found(name, version)
        return manager

    def get(self, name: str, version: int | None = None, label: str | None = None):
        return self._manager(name, version, label).get(name, version, label)

    def status(self, name: str, version: int | None = None, label: str | None = None):
        """GetModelStatus: ``label`` is ignored, as TF Serving's GetModelStatusImpl ignores it."""
        manager = self.managers().get(name)
        if manager is None:
            raise ServerError("NOT_FOUND", f"Could not find any versions of model {name}") if version is None \
                else ServerError("NOT_FOUND", f"Could not find version {version} of model {name}")
        return manager.status(name, version)

    def metadata(self, name: str, version: int | None = None, label: str | None = None):
        return self._manager(name, version, label).metadata(name, version, label)

    def servables(self) -> dict:
        """The default model's loaded versions ({version: Servable})."""
        return self.managers()[self.name].servables()

    def available(self) -> bool:
        """Whether every model has a version loaded (the gRPC health check's SERVING)."""
        return all(m.servables() for m in self.managers().values())

    def load_initial(self) -> "Models":
        """Loads every model's initial versions; a model with none, or a label TF Serving
        refuses (:func:`check_labels`), is a ValueError (the server does not start)."""
        for manager in self.managers().values():
            check_labels(manager.name, manager.labels, set(), {}, self.allow_unavailable_labels)
        for manager in self.managers().values():
            manager.load_initial()
        return self

    def start_polling(self) -> None:
        for manager in self.managers().values():
            manager.start_polling()

    def watch_config(self, read, seconds: float) -> None:
        """Re-reads the model config (``read() -> [ModelSpec]``) every ``seconds`` and applies it."""
        def loop():
            while not self._stop.wait(seconds):
                try:
                    self.apply(read())
                except Exception as e:  # TF Serving logs it and keeps the config it has
                    log(f"tfchargen serve: reloading the model config failed: {e}")
        self._thread = threading.Thread(target=loop, name="model-config-poller", daemon=True)
        self._thread.start()

    def apply(self, specs) -> None:
        """A new ModelServerConfig: loads added models, unloads removed ones, and takes a
        kept model's new version policy and labels (a new base_path replaces the model)."""
        current = self.managers()
        wanted = {s.name: s for s in specs}
        if [(s.name, s.base_path, s.policy, s.labels) for s in specs] == [
                (m.name, m.base, m.policy, m.labels) for m in current.values()]:
            return
        for spec in specs:  # labels first, against what serves now: a refused config changes nothing
            manager = current.get(spec.name)
            same = manager is not None and manager.base == spec.base_path
            check_labels(spec.name, spec.labels, set(manager.servables()) if same else set(),
                         manager.labels if same else {}, self.allow_unavailable_labels)
        for spec in specs:
            manager = current.get(spec.name)
            if manager is None or manager.base != spec.base_path:
                new = self._make(spec)
                try:
                    new.load_initial()
                except Exception:
                    new.stop()
                    raise
                new.start_polling()
                with self._lock:
                    self._managers[spec.name] = new
                if manager is not None:
                    manager.stop()
                log(f"tfchargen serve: serving model {spec.name} from {spec.base_path}")
                continue
            manager.policy, manager.labels = spec.policy, dict(spec.labels)
            manager.poll()
        for name in set(current) - set(wanted):
            with self._lock:
                manager = self._managers.pop(name)
            manager.stop()
            log(f"tfchargen serve: model {name} is no longer in the config: unloaded")
        with self._lock:  # config order: the first model stays the default
            self._managers = {n: self._managers[n] for n in wanted if n in self._managers}

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        for manager in self.managers().values():
            manager.stop()
