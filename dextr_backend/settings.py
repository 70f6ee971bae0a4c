"""Settings from the environment, with Label Studio's own names where they exist.

Every variable is listed in README's *Settings* table. This module is the only one in the package
that reads the environment (``tests/test_layout.py`` checks): everything else takes a
:class:`Settings`, so a library caller, a test or a CLI flag can say what it wants without
touching ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import InputError

OUTPUTS = ("auto", "brush", "polygon", "both")
# What runs the network's pass 1 on a CPU (``engines``): auto = the fastest runtime installed.
ENGINES = ("auto", "torch", "onnxruntime", "openvino")


def _parsed(name: str, default, parse, kind: str):
    raw = os.environ.get(name, "")
    try:
        return parse(raw) if raw.strip() else default
    except ValueError:
        raise InputError(f"{name} must be {kind}, got {raw!r}") from None


def _int(name: str, default: int) -> int:
    return _parsed(name, default, int, "a whole number")


def _float(name: str, default: float) -> float:
    return _parsed(name, default, float, "a number")


def _train_val_fraction() -> float:
    value = _float("DEXTR_TRAIN_VAL_FRACTION", 0.15)
    if not 0.0 < value < 1.0:
        raise InputError(f"DEXTR_TRAIN_VAL_FRACTION must lie between 0 and 1, got {value:g}")
    return value


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _default_shared_data() -> str:
    """``../shared/data`` beside a source checkout; empty for an installed package."""
    from pathlib import Path

    candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(candidate) if candidate.is_dir() else ""


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"  # DEXTR_HOST: bind address of `serve`
    port: int = 9090  # DEXTR_PORT: port of `serve`
    redis_url: str | None = None  # REDIS_URL: queue mode; unset = in-process inference
    redis_wait: float = 60.0  # DEXTR_REDIS_WAIT: seconds a starting worker waits for Redis
    label_studio_url: str | None = None  # LABEL_STUDIO_URL
    label_studio_api_key: str | None = None  # LABEL_STUDIO_API_KEY (legacy token or personal access token)
    basic_auth_user: str | None = None  # BASIC_AUTH_USER
    basic_auth_pass: str | None = None  # BASIC_AUTH_PASS
    weights: str | None = None  # DEXTR_WEIGHTS: version to serve (default: the current one)
    device: str = "auto"  # DEXTR_DEVICE
    corrector: str = "auto"  # DEXTR_CORRECTOR: auto | network | fbrs | graphcut [+consistent] | none
    engine: str = "auto"  # DEXTR_ENGINE: auto | torch | onnxruntime | openvino (CPU pass 1; CUDA is torch)
    output: str = "auto"  # DEXTR_OUTPUT: auto | brush | polygon | both
    predict_timeout: float = 30.0  # DEXTR_PREDICT_TIMEOUT: seconds /predict waits for a worker
    allowed_hosts: tuple[str, ...] = ()  # DEXTR_ALLOWED_HOSTS: extra image hosts, comma-separated
    image_cache_mb: int = 512  # DEXTR_IMAGE_CACHE_MB: decoded images kept per process
    max_image_mb: int = 50  # DEXTR_MAX_IMAGE_MB: larger downloads are refused
    train_every: int = 0  # DEXTR_TRAIN_EVERY: retrain after N new/updated annotations (0 = off)
    train_epochs: int = 10  # DEXTR_TRAIN_EPOCHS: epochs of a retraining job
    train_lr: float = 2e-3  # DEXTR_TRAIN_LR: learning rate of a retraining job (README: the levers)
    train_max_minutes: float = 30.0  # DEXTR_TRAIN_MAX_MINUTES: time budget of a retraining job
    train_samples: int = 0  # DEXTR_TRAIN_SAMPLES: samples per epoch (0 = 4 per object, 160-2000)
    train_val_fraction: float = 0.15  # DEXTR_TRAIN_VAL_FRACTION: share of images held out to decide promotion
    train_patience: int = 0  # DEXTR_TRAIN_PATIENCE: stop after N epochs without gain, keep the best
    # (0 = run every epoch, keep the last)
    train_guard_dir: str = ""  # DEXTR_TRAIN_GUARD_DIR: objects a new version must not get worse on
    train_min_val_objects: int = 3  # DEXTR_TRAIN_MIN_VAL_OBJECTS: fewer held-out objects -> not promoted
    fetch_timeout: float = 20.0  # DEXTR_FETCH_TIMEOUT: total seconds for one image fetch, redirects included
    fetch_min_rate_kb: float = 16.0  # DEXTR_FETCH_MIN_RATE_KB: image downloads slower than this many kB/s are
    # cut off once 2 s have passed (0 = off)
    fetch_concurrency: int = 16  # DEXTR_FETCH_CONCURRENCY: image fetches at once per process
    fetch_per_host: int = 4  # DEXTR_FETCH_PER_HOST: image fetches at once to one host, per process
    prefetch: bool = True  # DEXTR_PREFETCH: fetch a task's picture as it opens, before the first click (0 = off)
    max_url_chars: int = 8192  # DEXTR_MAX_URL_CHARS: longer image URLs (or /setup hostnames) are refused
    max_string_kb: int = 1024  # DEXTR_MAX_STRING_KB: longer strings in a request body are refused
    # (a data:image URI is an image: DEXTR_MAX_IMAGE_MB bounds it instead)
    max_tasks: int = 100  # DEXTR_MAX_TASKS: tasks per /predict request
    max_objects: int = 100  # DEXTR_MAX_OBJECTS: objects (point groups, boxes) per task
    max_points: int = 64  # DEXTR_MAX_POINTS: clicks per object (4 extreme + corrections)
    max_body_mb: int = 64  # DEXTR_MAX_BODY_MB: larger request bodies are refused
    max_concurrent: int = 4  # DEXTR_MAX_CONCURRENT: /predict requests computing at once per process
    threads: int = 0  # DEXTR_THREADS: torch's and the engine's CPU threads per process (0 = CPUs / processes)
    weights_dir: str = ""  # DEXTR_WEIGHTS_DIR: trained and imported versions (default: ~/.cache/dextr-backend/weights)
    weights_mirror: str = ""  # DEXTR_WEIGHTS_MIRROR: where official checkpoints are downloaded from
    data_dir: str = ""  # DEXTR_DATA_DIR: exported Label Studio labels (default: the temp dir)
    shared_data: str = ""  # DEXTR_SHARED_DATA: the benchmark images (default: ../shared/data)
    flip: bool = False  # DEXTR_FLIP: average with a mirrored pass (2x the cost)
    cpu_bf16: bool = False  # DEXTR_CPU_BF16: bfloat16 autocast on CPU
    max_image_pixels: int = 80_000_000  # DEXTR_MAX_IMAGE_PIXELS: larger images are refused before decoding
    log_level: str = "INFO"  # LOG_LEVEL
    log_format: str = "json"  # LOG_FORMAT: json | text

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        output = env.get("DEXTR_OUTPUT", "auto").strip().lower() or "auto"
        if output not in OUTPUTS:
            raise InputError(f"DEXTR_OUTPUT must be one of {', '.join(OUTPUTS)}, got {output!r}")
        hosts = tuple(h.strip() for h in env.get("DEXTR_ALLOWED_HOSTS", "").split(",") if h.strip())
        engine = env.get("DEXTR_ENGINE", "").strip().lower() or "auto"
        if engine not in ENGINES:
            raise InputError(f"DEXTR_ENGINE must be one of {', '.join(ENGINES)}, got {engine[:40]!r}")
        return cls(
            host=env.get("DEXTR_HOST", "").strip() or "0.0.0.0",
            port=_int("DEXTR_PORT", 9090),
            redis_url=env.get("REDIS_URL") or None,
            redis_wait=_float("DEXTR_REDIS_WAIT", 60.0),
            label_studio_url=env.get("LABEL_STUDIO_URL") or None,
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            basic_auth_user=env.get("BASIC_AUTH_USER") or None,
            basic_auth_pass=env.get("BASIC_AUTH_PASS") or None,
            weights=env.get("DEXTR_WEIGHTS") or None,
            device=env.get("DEXTR_DEVICE", "auto") or "auto",
            corrector=(env.get("DEXTR_CORRECTOR", "").strip() or "auto").lower(),
            engine=engine,
            output=output,
            predict_timeout=_float("DEXTR_PREDICT_TIMEOUT", 30.0),
            allowed_hosts=hosts,
            image_cache_mb=_int("DEXTR_IMAGE_CACHE_MB", 512),
            max_image_mb=_int("DEXTR_MAX_IMAGE_MB", 50),
            train_every=_int("DEXTR_TRAIN_EVERY", 0),
            train_epochs=_int("DEXTR_TRAIN_EPOCHS", 10),
            train_lr=_float("DEXTR_TRAIN_LR", 2e-3),
            train_max_minutes=_float("DEXTR_TRAIN_MAX_MINUTES", 30.0),
            train_samples=_int("DEXTR_TRAIN_SAMPLES", 0),
            train_val_fraction=_train_val_fraction(),
            train_patience=_int("DEXTR_TRAIN_PATIENCE", 0),
            train_guard_dir=os.environ.get("DEXTR_TRAIN_GUARD_DIR", ""),
            train_min_val_objects=_int("DEXTR_TRAIN_MIN_VAL_OBJECTS", 3),
            fetch_timeout=_float("DEXTR_FETCH_TIMEOUT", 20.0),
            fetch_min_rate_kb=_float("DEXTR_FETCH_MIN_RATE_KB", 16.0),
            fetch_concurrency=_int("DEXTR_FETCH_CONCURRENCY", 16),
            fetch_per_host=_int("DEXTR_FETCH_PER_HOST", 4),
            prefetch=os.environ.get("DEXTR_PREFETCH", "1").strip().lower() not in ("0", "false", "no", "off"),
            max_url_chars=_int("DEXTR_MAX_URL_CHARS", 8192),
            max_string_kb=_int("DEXTR_MAX_STRING_KB", 1024),
            max_tasks=_int("DEXTR_MAX_TASKS", 100),
            max_objects=_int("DEXTR_MAX_OBJECTS", 100),
            max_points=_int("DEXTR_MAX_POINTS", 64),
            max_body_mb=_int("DEXTR_MAX_BODY_MB", 64),
            max_concurrent=_int("DEXTR_MAX_CONCURRENT", 4),
            threads=_int("DEXTR_THREADS", 0),
            weights_dir=env.get("DEXTR_WEIGHTS_DIR", "").strip(),
            weights_mirror=env.get("DEXTR_WEIGHTS_MIRROR", "").strip(),
            data_dir=env.get("DEXTR_DATA_DIR", "").strip(),
            shared_data=env.get("DEXTR_SHARED_DATA", "").strip() or _default_shared_data(),
            flip=_flag("DEXTR_FLIP"),
            cpu_bf16=_flag("DEXTR_CPU_BF16"),
            max_image_pixels=_int("DEXTR_MAX_IMAGE_PIXELS", 80_000_000),
            log_level=(env.get("LOG_LEVEL", "").strip() or "INFO").upper(),
            log_format=(env.get("LOG_FORMAT", "").strip() or "json").lower(),
        )

    def labelstudio_data_dir(self, project: int):
        """Where a Label Studio project's exported labels are kept between retraining runs."""
        import tempfile
        from pathlib import Path

        return Path(self.data_dir or Path(tempfile.gettempdir()) / "dextr-backend") / f"ls-{project}"


def max_image_pixels() -> int:
    """``DEXTR_MAX_IMAGE_PIXELS`` alone, as the environment says now: the decoder's limit where no
    ``Settings`` were given, and OpenCV's own (set on import)."""
    return _int("DEXTR_MAX_IMAGE_PIXELS", 80_000_000)


def limit_opencv_decoding() -> None:
    """OpenCV refuses to decode images above this many pixels *before* allocating them, which is
    what stops a small "decompression bomb" file from eating the server's memory. OpenCV reads its
    limit from the process environment before its first decode, so the package sets it on import
    (unless the caller set OpenCV's own variable)."""
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_image_pixels()))


def share_threads(threads: int) -> None:
    """``serve --workers N --threads T``: the server processes are forked with this environment and
    each builds its own Settings from it, so T reaches them here."""
    os.environ["DEXTR_THREADS"] = str(threads)


def share_engine(engine: str) -> None:
    """``serve --engine E`` / ``worker --engine E``: the processes that build predictors read their
    Settings from the environment, so E reaches them here."""
    os.environ["DEXTR_ENGINE"] = engine
