"""Fitting a report into GitHub's comment limit."""

from __future__ import annotations

from deployer.github.comment import (
    COMMENT_LIMIT,
    MAX_LINE,
    comment_body,
    fit,
    section_key,
    sections_of,
    with_section,
)


def _report(log_lines: list[str], error: str = "container exited with code 1") -> str:
    return "\n".join(
        [
            "### Deploy of `diabetes`: FAILED",
            "",
            "| Target | Status |",
            "| --- | --- |",
            "| staging | failed |",
            "",
            "<details><summary>staging: error and last log lines</summary>",
            "",
            "```text",
            error,
            *log_lines,
            "```",
            "",
            "</details>",
            "",
        ]
    )


def test_a_report_that_fits_is_untouched() -> None:
    text = _report(["one", "two"])
    assert fit(text, 10_000) == text


def test_the_oldest_log_lines_go_first() -> None:
    logs = [f"log line {i:04d} " + "x" * 80 for i in range(200)]
    fitted = fit(_report(logs), 5_000)
    assert len(fitted) <= 5_000
    assert "container exited with code 1\n… " in fitted  # the error stays first
    assert logs[-1] in fitted and logs[0] not in fitted
    kept = [line for line in logs if line in fitted]
    assert kept == logs[-len(kept) :]  # a contiguous tail


def test_the_largest_log_block_pays_first() -> None:
    small = _report(["small block line"]).replace("staging", "local")
    large = _report([f"noisy {i} " + "y" * 100 for i in range(100)])
    fitted = fit(small + large, len(small + large) - 2_000)
    assert "small block line" in fitted
    assert "earlier lines cut" in fitted.split("local")[-1]


def test_overlong_lines_are_shortened() -> None:
    fitted = fit(_report([], error="E" * 100_000), 5_000)
    assert len(fitted) <= 5_000
    assert "E" * MAX_LINE + " … (line cut)" in fitted


def test_long_tables_are_cut_with_blocks_closed() -> None:
    rows = [f"| target-{i} | failed |" for i in range(5_000)]
    text = "\n".join(["<details><summary>x</summary>", "", "```text", *rows, "```", "</details>"])
    fitted = fit(text.replace("```text", "```diff"), 2_000)  # not a log block: cannot be thinned
    assert len(fitted) <= 2_000
    assert fitted.count("```") % 2 == 0
    assert fitted.count("<details>") == fitted.count("</details>")
    assert "cut to fit GitHub's comment size limit" in fitted


def test_the_body_with_marker_and_sections_stays_within_the_limit() -> None:
    body = comment_body("deploy.yaml", {"deploy staging": _report(["z" * 500] * 500)})
    assert len(body) <= COMMENT_LIMIT
    assert body.startswith(
        "<!-- deployer-report: deploy.yaml -->\n<!-- deployer-section: deploy staging -->\n"
    )
    assert body.endswith("<!-- /deployer-section -->\n")


def test_a_run_replaces_its_own_section_and_keeps_the_others_in_place() -> None:
    body = with_section(None, "deploy.yaml", "plan batch production", "### Plan v1")
    body = with_section(body, "deploy.yaml", "deploy staging", "### Deploy v1")
    body = with_section(body, "deploy.yaml", "plan batch production", "### Plan v2")
    assert sections_of(body) == {
        "plan batch production": "### Plan v2",
        "deploy staging": "### Deploy v1",
    }
    assert body.count("<!-- deployer-report:") == 1


def test_section_keys_name_the_command_and_the_sorted_targets() -> None:
    assert (
        section_key("plan", ["production", "edge", "batch", "edge"]) == "plan batch edge production"
    )


def test_a_log_line_cannot_close_or_open_a_section() -> None:
    hostile = _report(["<!-- /deployer-section -->", "<!-- deployer-section: deploy x -->"])
    body = with_section(None, "deploy.yaml", "deploy staging", hostile)
    body = with_section(body, "deploy.yaml", "plan edge", "### Plan")
    sections = sections_of(body)
    assert list(sections) == ["deploy staging", "plan edge"]
    assert "<!--\u200b /deployer-section -->" in sections["deploy staging"]
    assert sections["plan edge"] == "### Plan"


def test_when_sections_do_not_fit_the_room_is_shared_fairly() -> None:
    small = "### Plan\n\n| edge | iot_edge |\n"
    flood = _report([f"log {i} " + "x" * 200 for i in range(2_000)])
    body = with_section(None, "deploy.yaml", "plan edge", small)
    body = with_section(body, "deploy.yaml", "deploy staging", flood)
    assert len(body) <= COMMENT_LIMIT
    sections = sections_of(body)
    assert sections["plan edge"] == small.strip("\n")  # the small one keeps all of it
    assert len(sections["deploy staging"]) > COMMENT_LIMIT - 2_000  # the rest of the room
    assert "earlier lines cut to fit" in sections["deploy staging"]
