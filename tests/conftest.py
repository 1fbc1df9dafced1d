import os

os.environ.setdefault("MPLBACKEND", "Agg")

try:
    from hypothesis import settings
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    settings = None

if settings is not None:
    # `make test` is reproducible: the same examples on every run (a failure found once is
    # found again). HYPOTHESIS_PROFILE=explore draws fresh examples, for hunting.
    settings.register_profile("repeatable", derandomize=True)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
