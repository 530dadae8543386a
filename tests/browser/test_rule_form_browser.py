"""The dispatch rule form in a real browser: its help text shows the regex example as typed,
"Explain with this rule" leaves the form where it is, and the explain page starts with the
match kind its placeholder shows."""

from __future__ import annotations

import pytest

from agents_app.models import Agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_regex_help_shows_the_named_group_literally(admin_page, shot):
    page = admin_page
    page.goto("/admin/agents_app/dispatchrule/add/")

    help_text = page.locator("#id_room_match_value_helptext").inner_text()
    assert r"interview-(?P<candidate>\d+)" in help_text
    shot(page, "rule-form-help")


def test_explain_with_this_rule_opens_a_new_tab_and_keeps_the_form(admin_page, shot):
    page = admin_page
    Agent.objects.create(agent_name="interviewer", display_name="Interviewer")
    page.goto("/admin/agents_app/dispatchrule/add/")
    page.fill("#id_name", "interviews")
    page.select_option("#id_room_match_kind", "regex")
    page.fill("#id_room_match_value", r"interview-(?P<candidate>\d+)")
    page.select_option("#id_agent", label="interviewer")
    page.fill("#id_sample_room", "interview-42")
    form_url = page.url

    with page.context.expect_page() as opened:
        page.get_by_role("button", name="Explain with this rule").click()
    explain = opened.value
    explain.wait_for_load_state()

    verdict = " ".join(explain.locator("#explain-verdict").inner_text().split())
    assert verdict == "Room interview-42 gets: interviewer (rule “interviews”, token)."
    # The form is still there, unsaved, with what was typed.
    assert page.url == form_url
    assert page.locator("#id_room_match_value").input_value() == r"interview-(?P<candidate>\d+)"
    assert page.locator("#id_name").input_value() == "interviews"
    shot(explain, "rule-form-explain-tab")


def test_explain_page_match_kind_agrees_with_its_placeholder(admin_page):
    page = admin_page
    page.goto("/admin/agents_app/dispatchrule/explain/")

    assert page.locator("#id_room_match_value").get_attribute("placeholder") == "support-*"
    assert page.locator("#id_room_match_kind").input_value() == "glob"
