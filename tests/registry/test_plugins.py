"""Plugin entry points: each is loaded on its own, and one that cannot be used is reported, not raised.

The entry points here are real `importlib.metadata.EntryPoint` objects naming
objects of tests/registry; tests/plugins installs real distributions.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from funcpipe.errors import SpecErrors
from funcpipe.registry import ADAPTER_GROUP, STAGE_GROUP, KindLookupError, Registry, builtin_registry
from funcpipe.registry._plugins import a_name_for, one_line
from funcpipe.spec import load_spec_text
from tests.registry.plugin_targets import ECHO, TUNE

T = "tests.registry.plugin_targets"


def _registry(stages: dict[str, str] | None = None, adapters: dict[str, str] | None = None) -> Registry:
    declared = {STAGE_GROUP: stages or {}, ADAPTER_GROUP: adapters or {}}
    reg = builtin_registry()
    reg.load_entry_points(lambda group: [EntryPoint(n, v, group) for n, v in declared[group].items()])
    return reg


def test_good_entry_points_register_their_kinds() -> None:
    reg = _registry({"acme.tune": f"{T}:TUNE"}, {"acme.echo": f"{T}:ECHO"})
    assert reg.stage("acme.tune") is TUNE
    assert reg.adapter("acme.echo") is ECHO
    assert reg.plugin_problems == []


def test_a_plugin_that_fails_to_import_is_a_problem_and_the_others_still_load() -> None:
    reg = _registry({"acme.broken": "tests.registry.broken_plugin:KIND", "acme.tune": f"{T}:TUNE"})
    assert reg.stage("acme.tune") is TUNE
    (problem,) = reg.plugin_problems
    assert (problem.group, problem.entry_point, problem.target) == (
        STAGE_GROUP,
        "acme.broken",
        "tests.registry.broken_plugin:KIND",
    )
    assert problem.reason == "importing it failed: ImportError: No module named 'acme_native_extension'"
    assert 'python -c "import tests.registry.broken_plugin"' in problem.hint


def test_a_kind_of_a_broken_plugin_is_reported_as_that_plugin_failure() -> None:
    reg = _registry({"acme.broken": "tests.registry.broken_plugin:KIND"})
    with pytest.raises(KindLookupError) as info:
        reg.stage("acme.broken")
    message = str(info.value)
    assert message.startswith("stage kind 'acme.broken' comes from a plugin that cannot be used: ")
    assert "plugin entry point 'acme.broken' (funcpipe.stages, tests.registry.broken_plugin:KIND)" in message
    assert "ImportError: No module named 'acme_native_extension'" in message
    assert info.value.hint is not None and "import tests.registry.broken_plugin" in info.value.hint


def test_a_misspelt_built_in_is_not_blamed_on_a_broken_plugin() -> None:
    reg = _registry({"acme.broken": "tests.registry.broken_plugin:KIND"})
    with pytest.raises(KindLookupError) as info:
        reg.stage("text.chnk")
    assert str(info.value) == "unknown stage kind 'text.chnk' (did you mean 'text.chunk'?)"
    assert info.value.hint is None


def test_an_unknown_name_with_no_close_match_mentions_the_broken_plugins_of_its_group() -> None:
    reg = _registry({"acme.broken": "tests.registry.broken_plugin:KIND"})
    with pytest.raises(KindLookupError) as info:
        reg.stage("zzz.tuner")
    assert "unknown stage kind 'zzz.tuner'" in str(info.value)
    assert "it may come from a plugin that cannot be used: plugin entry point 'acme.broken'" in str(info.value)
    with pytest.raises(KindLookupError) as other_group:
        reg.adapter("zzz.echo")
    assert "plugin" not in str(other_group.value)  # a stages entry point cannot provide an adapter kind


@pytest.mark.parametrize(
    ("group", "target", "reason", "hint"),
    [
        (STAGE_GROUP, f"{T}:not_a_kind", "it names the function not_a_kind, not a StageKind", "a funcpipe.registry."),
        (STAGE_GROUP, f"{T}:TuneConfig", "it names the class TuneConfig, not a StageKind", "not a class"),
        (STAGE_GROUP, f"{T}:ECHO", "it names an AdapterKind, not a StageKind", "'funcpipe.adapters' entry-point"),
        (ADAPTER_GROUP, f"{T}:TUNE", "it names a StageKind, not an AdapterKind", "'funcpipe.stages' entry-point"),
        (ADAPTER_GROUP, f"{T}:NAME", "it names a str, not an AdapterKind", "a funcpipe.registry.AdapterKind"),
    ],
)
def test_an_entry_point_naming_something_else_than_a_kind_is_a_problem(
    group: str, target: str, reason: str, hint: str
) -> None:
    reg = _registry(**{"stages" if group == STAGE_GROUP else "adapters": {"acme.thing": target}})
    (problem,) = reg.plugin_problems
    assert (problem.group, problem.entry_point, problem.target) == (group, "acme.thing", target)
    assert problem.reason == reason
    assert hint in problem.hint
    assert "acme.thing" not in reg.stages and "acme.thing" not in reg.adapters


def test_a_plugin_cannot_replace_a_built_in_kind() -> None:
    builtin_embed = builtin_registry().stages["embed"]
    reg = _registry({"embed": f"{T}:EMBED"}, {"hashing": f"{T}:HASHING"})
    assert reg.stage("embed") is not None and reg.stages["embed"].config is builtin_embed.config
    assert reg.adapter("hashing").name == "hashing" and reg.adapters["hashing"].description != "Echo."
    stage, adapter = reg.plugin_problems
    assert stage.reason == "its stage kind 'embed' would replace the built-in stage kind 'embed': refused"
    assert adapter.reason == "its adapter kind 'hashing' would replace the built-in adapter kind 'hashing': refused"
    assert "a name of its own" in stage.hint


def test_a_second_plugin_cannot_replace_the_first_ones_kind() -> None:
    reg = _registry({"acme.tune": f"{T}:TUNE", "other.tune": f"{T}:TUNE_AGAIN"})
    assert reg.stage("acme.tune") is TUNE
    (problem,) = reg.plugin_problems
    assert problem.entry_point == "other.tune"
    assert problem.reason == (
        "its stage kind 'acme.tune' would replace the stage kind 'acme.tune' of plugin entry point "
        f"'acme.tune' (funcpipe.stages, {T}:TUNE): refused"
    )


def test_the_same_kind_under_two_entry_points_is_registered_once_without_a_problem() -> None:
    reg = _registry({"acme.tune": f"{T}:TUNE", "acme.tune2": f"{T}:TUNE"})
    assert reg.stage("acme.tune") is TUNE
    assert reg.plugin_problems == []


def test_a_kind_named_like_an_import_path_is_a_problem() -> None:
    reg = _registry({"acme.colon": f"{T}:COLON"})
    (problem,) = reg.plugin_problems
    assert "its stage kind is named 'acme:colon'" in problem.reason


def test_entry_points_are_loaded_once() -> None:
    calls: list[str] = []
    reg = builtin_registry()
    reg.load_entry_points(lambda group: calls.append(group) or [])
    reg.load_entry_points(lambda group: calls.append(group) or [])
    assert calls == [STAGE_GROUP, ADAPTER_GROUP]


def test_a_spec_naming_a_broken_plugins_kind_gets_a_located_error_with_the_plugins_hint() -> None:
    reg = _registry({"acme.broken": "tests.registry.broken_plugin:KIND"})
    text = "version: 1\nname: p\nstages:\n  - {id: t, use: acme.broken}\n"
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text, registry=reg)
    (error,) = info.value.errors
    assert (error.path, error.line) == ("stages[0].use", 4)
    assert "comes from a plugin that cannot be used" in error.message
    assert error.hint is not None and "import tests.registry.broken_plugin" in error.hint


def test_a_spec_with_a_misspelt_kind_is_told_about_the_misspelling_only() -> None:
    reg = _registry({"acme.broken": "tests.registry.broken_plugin:KIND"})
    text = "version: 1\nname: p\nstages:\n  - {id: t, use: text.chnk}\n"
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text, registry=reg)
    (error,) = info.value.errors
    assert error.message == "unknown stage kind 'text.chnk' (did you mean 'text.chunk'?)"
    assert "plugin" not in (error.hint or "")


def test_messages_name_what_was_found() -> None:
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError("x" * 500)).endswith("…") and len(one_line(RuntimeError("x" * 500))) == 300
    assert a_name_for(len) == "the builtin_function_or_method len"
    assert a_name_for(3) == "an int"
