import logging
import uuid

from app.errors import log_unexpected


def _raise_chained(text: str) -> None:
    try:
        raise KeyError(f"lookup of {text}")
    except KeyError as inner:
        raise RuntimeError(f"classifying {text} failed") from inner


def test_unexpected_errors_are_logged_by_type_and_frames_never_by_message(caplog):
    sentinel = uuid.uuid4().hex  # built at run time: the logged source lines cannot hold it
    try:
        _raise_chained(sentinel)
    except RuntimeError as err:
        with caplog.at_level(logging.ERROR, logger="ray.serve"):
            log_unexpected(err)
    (record,) = caplog.records
    logged = record.getMessage()
    assert sentinel not in logged and record.exc_info is None
    # Both errors of the chain, root cause first, each with its frames.
    assert logged.index("builtins.KeyError") < logged.index("builtins.RuntimeError")
    assert logged.count("in _raise_chained") == 2
