"""Nautobot's configuration read once per batch, as Nautobot reads it once per web request.

Every save reads about ten of Nautobot's configuration caches through Redis: custom fields and
their keys, data-validation rules, change-logged models, Git-provided contents. Nautobot's web
requests run in its `request_cache()` scope (entered by its middleware), which its custom-field
lookups consult; a batch of streamsync's gets the same scope, and this thread's reads of the other
configuration keys (`nautobot.*`) go through the same per-scope dict. A key written or deleted
within the scope is read from Redis again.

Within a batch the configuration is taken to stay as it is: a source whose models include the
configuration behind those caches gets no such scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

PREFIX = "nautobot."  # nautobot.core.utils.cache.construct_cache_key
# Nautobot models whose changes a batch's scope would not see (app label, model name).
CONFIGURATION = frozenset(
    {
        ("extras", "customfield"),
        ("extras", "customfieldchoice"),
        ("extras", "relationship"),
        ("extras", "gitrepository"),
        ("contenttypes", "contenttype"),
    }
)
CONFIGURATION_APPS = frozenset({"data_validation"})


def writes_configuration(models: Iterable[Any]) -> bool:
    """Whether any of these DiffSync models is bound to a Nautobot model behind the configuration caches."""
    for model in models:
        django_model = getattr(model, "_model", None)
        if django_model is None:
            continue
        meta = django_model._meta
        if (meta.app_label, meta.model_name) in CONFIGURATION or meta.app_label in CONFIGURATION_APPS:
            return True
    return False


@contextmanager
def batch_cache(models: Iterable[Any]) -> Iterator[None]:
    """One batch of these models in Nautobot's request cache scope; no scope when they write its configuration."""
    if writes_configuration(models):
        yield
        return
    from django.core.cache import caches
    from nautobot.core.utils.cache import get_request_cache, request_cache

    cache = caches["default"]  # this thread's
    if "get" in vars(cache):  # a batch inside a batch: the outer scope serves both
        yield
        return
    with request_cache():
        memo: dict[str, Any] = get_request_cache()
        _remember_reads(cache, memo)
        try:
            yield
        finally:
            for name in _WRAPPED:
                vars(cache).pop(name, None)


_WRAPPED = ("get", "set", "delete", "delete_many", "set_many", "clear", "delete_pattern")


def _remember_reads(cache: Any, memo: dict[str, Any]) -> None:
    """Route `cache`'s reads of Nautobot's keys through `memo`; writes drop what they touch."""
    read = cache.get

    def get(key: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(key, str) or not key.startswith(PREFIX):
            return read(key, *args, **kwargs)
        if key in memo:
            return memo[key]
        value = read(key)
        if value is not None:  # a miss is computed and set by the caller; the next read finds it in Redis
            memo[key] = value
        return value

    def forgetting(name: str, keys: Any) -> Any:
        write = getattr(cache, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for key in keys(args, kwargs):
                memo.pop(key, None)
            return write(*args, **kwargs)

        return wrapper

    def first(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        return [args[0] if args else kwargs.get("key")]

    def many(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        return list(args[0] if args else kwargs.get("keys") or kwargs.get("data") or ())

    def every(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        return list(memo)

    cache.get = get
    for name, keys in (("set", first), ("delete", first), ("delete_many", many), ("set_many", many)):
        cache.__dict__[name] = forgetting(name, keys)
    for name in ("clear", "delete_pattern"):
        if hasattr(cache, name):
            cache.__dict__[name] = forgetting(name, every)
