"""lib.logs: the ids bound where work starts reach every line, in JSON or in text."""

import logging
import logging.config
import threading

import pytest
from django.conf import settings

from lib import logs


@pytest.fixture
def lines(json_log):
    read = json_log("tests.lib.logs")
    logging.getLogger("tests.lib.logs").propagate = False
    return logging.getLogger("tests.lib.logs"), read


def test_a_json_line_holds_the_message_the_level_and_the_bound_ids(lines):
    logger, read = lines
    with logs.bound(tenant=3, instance=7, step=None):
        logger.info("hello %s", "world")
    logger.warning("after")
    first, second = read()
    assert first["message"] == "hello world" and first["level"] == "INFO"
    assert first["logger"] == "tests.lib.logs" and first["time"].endswith("+00:00")
    assert (first["tenant"], first["instance"]) == (3, 7) and "step" not in first
    assert "tenant" not in second


def test_a_traceback_is_one_field_of_one_line(lines):
    logger, read = lines
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger.exception("it failed")
    (line,) = read()
    assert "ValueError: bad" in line["exception"] and line["message"] == "it failed"


def test_bind_adds_to_the_enclosing_block_only(lines):
    with logs.bound(tenant=1):
        logs.bind(instance_key="order-1")
        assert logs.current() == {"tenant": 1, "instance_key": "order-1"}
    assert logs.current() == {}


def test_other_threads_do_not_see_the_ids():
    seen = []
    with logs.bound(tenant=1):
        thread = threading.Thread(target=lambda: seen.append(logs.current()))
        thread.start()
        thread.join()
    assert seen == [{}]


def test_the_text_format_appends_the_ids_before_any_traceback():
    formatter = logs.TextFormatter(logs.TEXT_FORMAT)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    record.ids = {"activation": "abc", "tenant": 2}
    record.exc_text = "Traceback: ..."
    head, tail = formatter.format(record).split("\n", 1)
    assert head.endswith("ERROR x: boom [tenant=2 activation=abc]") and tail == "Traceback: ..."


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logs.logging_config("xml", "INFO")


def test_the_configuration_loads_and_covers_uvicorns_loggers():
    config = logs.logging_config("json", "INFO")
    logging.config.dictConfig({**config, "root": {"level": "INFO", "handlers": []}})
    handler = logging.getLogger("uvicorn.access").handlers[0]
    assert isinstance(handler.formatter, logs.JsonFormatter)
    logging.config.dictConfig(settings.LOGGING)
