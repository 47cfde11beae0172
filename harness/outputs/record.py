"""The JSON mapping shared by the typed outputs: typed fields, unknown keys kept, strict JSON.

A `Record` subclass is a dataclass whose fields are the keys of one JSON object. `from_json` reads
any version of the file: a missing key is None, an unknown key lands in `extra` and is written back
unchanged, a nested object becomes its typed record where the field says so. `to_json` writes the
keys the record was read with (so `to_json(from_json(x)) == x`), or, for a record built in code,
every field except optional ones that are None.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any, TypeVar

from harness.metrics import finite_or_none

R = TypeVar("R", bound="Record")


def field(key: str | None = None, nested: type | None = None, optional: bool = False,
          default: Any = None) -> Any:
  """A JSON key: `key` when the name differs, `nested` for a typed child record, `optional` when
  code leaves the key out while it is None."""
  return dataclasses.field(default=default, metadata={"key": key, "nested": nested,
                                                      "optional": optional})


@dataclasses.dataclass(kw_only=True)
class Record:
  """Base of the typed outputs; see the module docstring."""
  extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
  # Keys of the file the record was read from (None: built in code), and fields whose value was
  # derived from an older key: written only when the file had them.
  _keys: frozenset[str] | None = dataclasses.field(default=None, repr=False, compare=False)
  _derived: frozenset[str] = dataclasses.field(default=frozenset(), repr=False, compare=False)

  @classmethod
  def _json_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name not in ("extra", "_keys", "_derived")]

  @staticmethod
  def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name

  @classmethod
  def from_json(cls: type[R], obj: dict[str, Any]) -> R:
    """The record of a JSON object written by any version of the harness."""
    if not isinstance(obj, dict):
      raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(obj).__name__}")
    values: dict[str, Any] = {}
    for f in cls._json_fields():
      if cls._key(f) in obj:
        value = obj[cls._key(f)]
        nested = f.metadata.get("nested")
        values[f.name] = nested.from_json(value) if nested and isinstance(value, dict) else value
    known = {cls._key(f) for f in cls._json_fields()}
    extra = {k: v for k, v in obj.items() if k not in known}
    derived = cls._older_keys(obj, values)
    values.update(derived)
    return cls(**values, extra=extra, _keys=frozenset(obj), _derived=frozenset(derived))

  @classmethod
  def _older_keys(cls, obj: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Fields an older file stored elsewhere ({} here; a record with such files overrides it)."""
    del obj, values
    return {}

  def _writes(self, f: dataclasses.Field, value: Any) -> bool:
    if self._keys is None:
      return value is not None or not f.metadata.get("optional")
    if self._key(f) in self._keys:
      return True
    return value is not None and f.name not in self._derived

  def to_json(self) -> dict[str, Any]:
    """The JSON object (plain dicts and lists; NaN left for `dump` to turn into null)."""
    out: dict[str, Any] = {}
    for f in self._json_fields():
      value = getattr(self, f.name)
      if self._writes(f, value):
        out[self._key(f)] = value.to_json() if isinstance(value, Record) else copy.deepcopy(value)
    out.update(copy.deepcopy(self.extra))
    return out


def dumps(obj: Any, indent: int = 2, newline: bool = True) -> str:
  """Strict JSON text (NaN and Inf as null), keys sorted."""
  if isinstance(obj, Record):
    obj = obj.to_json()
  text = json.dumps(finite_or_none(obj), indent=indent, sort_keys=True, default=str,
                    allow_nan=False)
  return text + "\n" if newline else text


def read(cls: type[R], path: str | os.PathLike) -> R | None:
  """The record in the JSON file at `path`, or None if it is missing or not a JSON object."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return cls.from_json(value) if isinstance(value, dict) else None


def coerce(cls: type[R], value: R | dict[str, Any] | None) -> R | None:
  """`value` as a `cls` record: dicts (e.g. a results.jsonl entry) are read with from_json."""
  if value is None or isinstance(value, cls):
    return value
  return cls.from_json(value)
