"""build_from_spec / Configurable: the shared YAML-spec -> object path."""

import pytest

from nntrain import validate as v
from nntrain.errors import ConfigError
from nntrain.registry import Registry
from nntrain.spec import Configurable, build_from_spec, option_names

THINGS = Registry("thing")


@THINGS.register("widget")
class Widget(Configurable):
    context_args = ("owner",)

    def __init__(self, owner, size: int, colours: list = ["red"], shiny: bool = False):  # noqa: B006
        self.owner = owner
        self.size = v.positive_int(size, "size")
        self.colours = colours
        self.shiny = v.boolean(shiny, "shiny")


def test_builds_with_context_and_round_trips():
    w = build_from_spec(THINGS, {"type": "widget", "size": 3}, "thing", owner="me")
    assert w.owner == "me" and w.size == 3
    config = w.get_config()
    assert config == {"type": "widget", "size": 3, "colours": ["red"], "shiny": False}
    assert build_from_spec(THINGS, config, "thing", owner="you").get_config() == config


def test_get_config_is_a_copy():
    w = build_from_spec(THINGS, {"type": "widget", "size": 3}, "thing", owner=None)
    w.get_config()["colours"].append("blue")
    assert w.get_config()["colours"] == ["red"]
    assert Widget(None, 1).get_config()["colours"] == ["red"]


def test_option_names_exclude_context():
    assert option_names(Widget) == ["size", "colours", "shiny"]


def test_errors_say_where_and_what():
    with pytest.raises(ConfigError, match=r"thing \(widget\): unknown option 'sise'; did you mean 'size'\? "
                                          r"\(options: size, colours, shiny\)"):
        build_from_spec(THINGS, {"type": "widget", "sise": 3}, "thing", owner=None)
    with pytest.raises(ConfigError, match=r"thing \(widget\): unknown option 'owner'"):
        build_from_spec(THINGS, {"type": "widget", "size": 3, "owner": "x"}, "thing", owner=None)
    with pytest.raises(ConfigError, match=r"thing \(widget\): missing required option 'size'"):
        build_from_spec(THINGS, "widget", "thing", owner=None)
    with pytest.raises(ConfigError, match=r"thing \(widget\): expected a positive integer, received size=0"):
        build_from_spec(THINGS, {"type": "widget", "size": 0}, "thing", owner=None)
    with pytest.raises(ConfigError, match=r"thing: unknown thing type 'widgit'; did you mean 'widget'"):
        build_from_spec(THINGS, "widgit", "thing", owner=None)
    one_line = r"^thing: unknown thing type 'wid\\nget'; did you mean 'widget'\? \(known: widget\)$"
    with pytest.raises(ConfigError, match=one_line):  # the name as Python writes it, not a line break
        build_from_spec(THINGS, "wid\nget", "thing", owner=None)
    with pytest.raises(ConfigError, match=r"thing: expected a type name or a mapping .* received \[1, 2\]"):
        build_from_spec(THINGS, [1, 2], "thing", owner=None)
    with pytest.raises(ConfigError, match="missing a required argument"):
        Widget(None)  # direct construction: the signature error is a ConfigError too
