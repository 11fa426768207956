"""The sticky pull-request comment: one per pull request and deploy.yaml, updated in place.

A comment is ours when its first line is the hidden marker naming the config AND its author is
the identity posting now. The marker alone is not enough: on a public repository anyone can
post a comment starting with it, and updating theirs would put the report under their name,
free for them to edit afterwards. The first-line rule also keeps quote-replies ("> <!-- ...")
from matching. The identity: a personal access token's user (``GET /user``); an installation
token (GITHUB_TOKEN, a GitHub App's, prefix ``ghs_``) cannot ask ``/user``, and posts as a bot
(``github-actions[bot]``, ``<app>[bot]``), so then any bot-authored marker comment is ours.

One pull request gets several reports for one config: the plan of the production targets and
the deploy of the preview, say. Each is a section of the one comment, found again by its own
hidden marker (the command and the targets), and a run replaces only its own section.
"""

from __future__ import annotations

import os.path
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from deployer.events import Event, Sink, discard
from deployer.github.api import GitHubApi, GitHubError, ServerUnavailable

COMMENT_LIMIT = 65_536  # characters GitHub accepts in a comment body
INSTALLATION_TOKEN_PREFIX = "ghs_"
MAX_LINE = 2_000  # characters kept of one log line when the body must shrink
CREATE_ATTEMPTS = 3
_SECTION_START = "<!-- deployer-section: {key} -->"
_SECTION_END = "<!-- /deployer-section -->"
_SECTION = re.compile(
    r"^<!-- deployer-section: ([a-z]+(?: [a-z0-9-]+)*) -->\n(.*?)\n<!-- /deployer-section -->$",
    re.DOTALL | re.MULTILINE,
)
# What a report's text must not contain, so that it cannot open or close a section itself (a
# log line can say anything); a zero-width space after "<!--" keeps it readable.
_MARKER_LOOKALIKE = re.compile(r"<!--(?= ?/?deployer-)")

BodyBuilder = Callable[[str | None], str]  # the body now (None: no comment yet) -> the new body


def marker(config: str) -> str:
    """The hidden first line naming the config; quoted so no path can end the HTML comment."""
    path = os.path.normpath(config).replace(os.sep, "/")
    return f"<!-- deployer-report: {quote(path, safe='/')} -->"


def section_key(command: str, targets: Sequence[str]) -> str:
    """Which section a report fills: ``plan batch edge production``, ``deploy staging``."""
    return " ".join([command, *sorted(set(targets))])


def sections_of(body: str) -> dict[str, str]:
    """The sections of one of our comments, in the order they appear."""
    return {match[1]: match[2] for match in _SECTION.finditer(body)}


def with_section(body: str | None, config: str, key: str, text: str) -> str:
    """``body`` with the section ``key`` set to ``text`` (added last if it was not there)."""
    sections = sections_of(body) if body else {}
    sections[key] = _MARKER_LOOKALIKE.sub("<!--\u200b", text).strip("\n")
    return comment_body(config, sections)


def comment_body(config: str, sections: Mapping[str, str]) -> str:
    """The whole comment: the marker, then each section, all within GitHub's limit.

    When they do not fit, the room is shared out max-min fairly: a section shorter than its
    share keeps all of it, and what it leaves goes to the others.
    """
    head = marker(config) + "\n"
    blocks = {
        key: (_SECTION_START.format(key=key) + "\n", "\n" + _SECTION_END + "\n\n")
        for key in sections
    }
    overhead = {key: len(start) + len(end) for key, (start, end) in blocks.items()}
    wanted = {key: overhead[key] + len(text) for key, text in sections.items()}
    allotted = _share(wanted, COMMENT_LIMIT - len(head))
    parts = [head]
    for key, text in sections.items():
        start, end = blocks[key]
        parts.append(start + fit(text, max(allotted[key] - overhead[key], 0)) + end)
    return "".join(parts).rstrip("\n") + "\n"


def _share(wanted: Mapping[str, int], room: int) -> dict[str, int]:
    allotted: dict[str, int] = {}
    for position, key in enumerate(sorted(wanted, key=wanted.__getitem__)):
        share = room // (len(wanted) - position)
        allotted[key] = min(wanted[key], share)
        room -= allotted[key]
    return allotted


def fit(markdown: str, limit: int) -> str:
    """The report within ``limit`` characters, cut where it matters least.

    Only the logs are long: first overlong log lines are shortened, then the oldest log lines
    go (each block keeps its first line, where the error is, and its last lines, which show
    how the service failed). Should the tables themselves be too long, the text is cut at a
    line, any open code block and <details> closed, and a note says so.
    """
    if len(markdown) <= limit:
        return markdown
    lines = markdown.split("\n")
    blocks = _log_blocks(lines)
    for block in blocks:
        for i in block:
            if len(lines[i]) > MAX_LINE:
                lines[i] = lines[i][:MAX_LINE] + " … (line cut)"
    text = "\n".join(lines)
    if len(text) > limit:
        text = _drop_oldest_log_lines(lines, blocks, len(text) - limit)
    if len(text) > limit:
        text = _hard_cut(text, limit)
    return text


def _log_blocks(lines: list[str]) -> list[list[int]]:
    """Line indexes inside each ```text block (report.to_markdown puts error and logs there)."""
    blocks: list[list[int]] = []
    current: list[int] | None = None
    for i, line in enumerate(lines):
        if current is None and line.startswith("```text"):
            current = []
        elif current is not None and line.startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(i)
    return blocks


def _drop_oldest_log_lines(lines: list[str], blocks: list[list[int]], excess: int) -> str:
    note_room = 80  # the "… N lines cut …" note that replaces them
    dropped: set[int] = set()
    notes: dict[int, int] = {}  # first line of a block -> how many lines after it were cut
    removable = {block[0]: block[1:-1] for block in blocks if len(block) > 2}
    # Largest block first: the one flooding the comment pays, the others keep their lines.
    for first, candidates in sorted(
        removable.items(), key=lambda item: -sum(len(lines[i]) for i in item[1])
    ):
        excess += note_room
        for i in candidates:
            if excess <= 0:
                break
            dropped.add(i)
            excess -= len(lines[i]) + 1
            notes[first] = notes.get(first, 0) + 1
        if excess <= 0:
            break
    out: list[str] = []
    for i, line in enumerate(lines):
        if i in dropped:
            continue
        out.append(line)
        if i in notes:
            out.append(f"… {notes[i]} earlier lines cut to fit GitHub's comment size limit …")
    return "\n".join(out)


def _hard_cut(text: str, limit: int) -> str:
    note = "\n\n_The report was cut to fit GitHub's comment size limit; see the job summary._\n"
    closing = "\n```\n</details>\n"
    kept = text[: max(limit - len(note) - len(closing), 0)]
    kept = kept[: kept.rfind("\n") + 1] if "\n" in kept else kept
    tail = ""
    if sum(line.startswith("```") for line in kept.split("\n")) % 2:
        tail += "```\n"
    if kept.count("<details>") > kept.count("</details>"):
        tail += "</details>\n"
    return kept + tail + note


@dataclass(frozen=True)
class Author:
    """Whose marker comments are ours: a user's login, or (None) any bot account."""

    login: str | None

    def wrote(self, comment: Mapping[str, Any]) -> bool:
        user = comment.get("user")
        if not isinstance(user, Mapping):
            return False
        if self.login is not None:
            return bool(user.get("login") == self.login)
        return bool(user.get("type") == "Bot")


def author_for(api: GitHubApi, token: str) -> Author:
    if token.startswith(INSTALLATION_TOKEN_PREFIX):
        return Author(None)
    try:
        user = api.get("user").data
    except GitHubError:
        return Author(None)  # a token that cannot read /user posts as an app's bot
    login = user.get("login") if isinstance(user, Mapping) else None
    return Author(login if isinstance(login, str) else None)


@dataclass(frozen=True)
class StickyComment:
    id: int
    url: str
    action: Literal["created", "updated"]


def find(
    api: GitHubApi, repo: str, number: int, config: str, author: Author
) -> Mapping[str, Any] | None:
    """Our comment on the pull request, searched through every page of its comments."""
    wanted = marker(config)
    for comment in api.paginate(f"repos/{repo}/issues/{number}/comments?per_page=100"):
        if not isinstance(comment, Mapping):
            continue
        first_line = str(comment.get("body") or "").split("\n", 1)[0].strip()
        if first_line == wanted and author.wrote(comment):
            return comment  # the oldest: comments are listed in the order they were made
    return None


def upsert(
    api: GitHubApi,
    repo: str,
    number: int,
    config: str,
    build: BodyBuilder,
    *,
    author: Author,
    progress: Sink = discard,
) -> StickyComment:
    """Update our comment, or create it when there is none yet; ``build`` makes the body from
    the one there is (so that the other sections are kept).

    A create that got no clear answer (5xx, a dropped connection) may still have created the
    comment, so it is not simply sent again: the comments are searched again first, and a
    comment found then is updated. That is what keeps a flaky API from leaving two. Two runs
    that both found none and both created one also leave one: after creating, each looks
    again, and the run whose comment is not the oldest moves its section into the oldest and
    deletes its own. (Two runs updating at the same moment can still lose one's section: the
    API has no conditional update. The reusable workflow runs one job per config and ref at
    a time.)
    """
    for attempt in range(CREATE_ATTEMPTS):
        existing = find(api, repo, number, config, author)
        if existing is not None:
            body = build(str(existing.get("body") or ""))
            answer = api.patch(f"repos/{repo}/issues/comments/{existing['id']}", {"body": body})
            return _sticky(answer.data, "updated")
        try:
            answer = api.post(f"repos/{repo}/issues/{number}/comments", {"body": build(None)})
        except ServerUnavailable as error:
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            delay = api.policy.backoff_s * 2**attempt
            progress(Event("detail", f"{error}; looking again in {delay:g} s"))
            api.policy.sleep(delay)
            continue
        return _keep_the_oldest(
            api, answer.data, repo=repo, number=number, config=config, build=build, author=author
        )
    raise AssertionError("unreachable: the last attempt returns or raises")


def _keep_the_oldest(
    api: GitHubApi,
    created: Any,
    *,
    repo: str,
    number: int,
    config: str,
    build: BodyBuilder,
    author: Author,
) -> StickyComment:
    ours = _sticky(created, "created")
    oldest = find(api, repo, number, config, author)
    if oldest is None or oldest.get("id") == ours.id:
        return ours
    body = build(str(oldest.get("body") or ""))
    answer = api.patch(f"repos/{repo}/issues/comments/{oldest['id']}", {"body": body})
    api.delete(f"repos/{repo}/issues/comments/{ours.id}")
    return _sticky(answer.data, "updated")


def _sticky(data: Any, action: Literal["created", "updated"]) -> StickyComment:
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), int):
        raise GitHubError(f"GitHub {action} the comment but answered without its id")
    return StickyComment(int(data["id"]), str(data.get("html_url", "")), action)
