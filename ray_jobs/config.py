"""YAML job configs with dotted ``--set key=value`` overrides, checked strictly against the
stage's dataclasses: an unknown key stops the job and names the nearest valid key."""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from pathlib import Path

import yaml

from shards import storage

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # bundled configs: demo, ...


class ConfigError(ValueError):
    """A config that cannot run; the message says what to change."""


def parse_overrides(pairs: list[str]) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> nested dict, values parsed as YAML scalars/lists."""
    tree: dict = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {pair!r}: write key=value, e.g. --set characters.count=4")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return tree


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build(cls, data: dict, where: str = ""):
    """Instantiate dataclass ``cls`` from ``data``, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {where}{near[0]}?" if near else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key {path!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(hint, value, path: str):
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list like [a, b], got {value!r}")
        args = typing.get_args(hint)
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(value):
            raise ConfigError(f"{path}: expected {len(kinds)} values, got {len(value)}")
        return tuple(_coerce(k, v, path) for k, v in zip(kinds, value))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
    return value


@dataclasses.dataclass
class StorageConfig:
    """``--set storage.KEY=VALUE``: how to reach object storage, for every job. Not part of a job's
    config (nor of its hash or its config.yaml): it says where the bytes are, not what they are.
    Credentials have no key here: the libraries read them from the environment and their own files."""
    endpoint_url: str = ""  # an S3-compatible server (MinIO, Ceph, moto); unset: AWS_ENDPOINT_URL, else AWS
    attempts: int = storage.Settings.attempts    # tries of one request on transient errors
    backoff_s: float = storage.Settings.backoff_s  # first wait between tries, doubling up to 10 s
    timeout_s: float = storage.Settings.timeout_s  # connect and read timeout of one request


def apply_storage_overrides(overrides: list[str]) -> list[str]:
    """Configure shards.storage from the ``storage.*`` overrides (only the keys given); returns the others."""
    ours = [o for o in overrides if o.startswith("storage.")]
    if ours:
        given = parse_overrides(ours)["storage"]
        settings = build(StorageConfig, given, "storage.")
        if settings.attempts < 1 or settings.timeout_s <= 0 or settings.backoff_s < 0:
            raise ConfigError("storage: attempts must be >= 1, timeout_s > 0 and backoff_s >= 0")
        storage.configure(**{key: getattr(settings, key) for key in given})
    return [o for o in overrides if not o.startswith("storage.")]


def load_config(cls, path: str | Path | None = None, overrides: list[str] = ()):
    """Defaults <- YAML file (a path, a URL or a bundled name) <- --set overrides, then the
    dataclass's own check(). ``storage.*`` overrides configure shards.storage instead."""
    overrides = apply_storage_overrides(list(overrides))
    data: dict = {}
    if path is not None:
        path = str(path)
        if not storage.is_remote(path) and not Path(path).exists() and (CONFIG_DIR / f"{path}.yaml").exists():
            path = str(CONFIG_DIR / f"{path}.yaml")  # a bundled config by name: demo, qa, paper
        try:
            data = yaml.safe_load(storage.read_text(path)) or {}
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config {path} is not valid YAML: {error}") from None
    config = build(cls, _merge(data, parse_overrides(overrides)))
    try:
        config.check()
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    return config


def config_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(config) -> str:
    """Hash of the resolved config and of the contents of any files it names (``content_files()``);
    it goes into every manifest, so a changed pose table is a changed config."""
    digest = hashlib.sha256(json.dumps(config_dict(config), sort_keys=True, separators=(",", ":")).encode())
    for path in getattr(config, "content_files", list)():
        digest.update(hashlib.sha256(storage.read_bytes(path)).digest())
    return digest.hexdigest()[:16]


def write_resolved(config, directory: str | Path) -> str:
    path = storage.join(directory, "config.yaml")
    storage.write_bytes(path, yaml.safe_dump(config_dict(config), sort_keys=False).encode())
    return path


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs, as "key: old -> new"."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def read_resolved(directory: str | Path) -> dict | None:
    path = storage.join(directory, "config.yaml")
    return yaml.safe_load(storage.read_text(path)) if storage.exists(path) else None
