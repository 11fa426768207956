"""Deploy reports kept as workflow artifacts, so that a plan can compare with the last deploy.

The action uploads every report it writes as an artifact named by ``report_artifact_name``. A
plan on a pull request runs on a fresh runner, with no report of its own to compare with: it
looks up the newest unexpired artifact of a deploy of the same targets made on the repository's
default branch, and reads the report inside. Reports of deploys of single targets are looked up
for what that one does not cover, so a workflow that deploys its targets in separate calls is
compared as well as one that deploys them together.

Only artifacts of runs in the repository itself count: a pull request from a fork runs its own
version of the workflow, and could upload an artifact of the same name from a branch it calls
``main``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from deployer.events import Event, Sink, discard
from deployer.github.api import GitHubApi, GitHubError
from deployer.preview import Baseline

REPORT_FILE = "deploy-report.json"
MAX_ARCHIVE_BYTES = 16 * 1024 * 1024  # a report is kilobytes; its logs are cut at the source
# upload-artifact refuses these in a name (NTFS's reserved characters, and the separators).
_NOT_IN_NAMES = '":<>|*?\r\n\\/'
MAX_NAME = 200


def report_artifact_name(command: str, config: str, targets: Sequence[str]) -> str:
    """The artifact a report of ``command`` for these targets of ``config`` is uploaded as.

    The target names are sorted, so that the order they were given in does not matter. Target
    names are ``[a-z0-9-]``, so ``+`` between them is unambiguous.
    """
    path = os.path.normpath(config).replace(os.sep, "/")
    config_part = "".join("-" if c in _NOT_IN_NAMES else c for c in path)
    targets_part = "+".join(sorted(set(targets)))
    name = f"deploy-report_{command}_{config_part}_{targets_part}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"deploy-report_{command}_{config_part[:100]}_{digest}"
    return name


def last_deploy(
    api: GitHubApi,
    repo: str,
    config: str,
    targets: Sequence[str],
    branch: str,
    *,
    progress: Sink = discard,
) -> Baseline | None:
    """The newest deploy reports from ``branch`` that cover ``targets``, as far as any do;
    None when there is none yet.

    Raises ``GitHubError`` when GitHub refuses (a token without ``actions: read``).
    """
    wanted = list(dict.fromkeys(targets))
    names = [report_artifact_name("deploy", config, wanted)]
    if len(wanted) > 1:
        names += [report_artifact_name("deploy", config, [t]) for t in wanted]
    found: dict[str, Mapping[str, Any]] = {}
    sources: list[str] = []
    for name in names:
        missing = [t for t in wanted if t not in found]
        if not missing:
            break
        artifact = _newest(api, repo, name, branch)
        if artifact is None:
            continue
        report = _report_in(api, repo, artifact)
        entries = {
            str(t["name"]): t
            for t in report["targets"]
            if isinstance(t, Mapping) and t.get("name") in missing
        }
        if entries:
            found.update(entries)
            sources.append(_describe(artifact, branch))
            progress(Event("detail", f"comparing {', '.join(entries)} with {sources[-1]}"))
    return Baseline(found, "; ".join(sources)) if found else None


def _newest(api: GitHubApi, repo: str, name: str, branch: str) -> Mapping[str, Any] | None:
    answer = api.get(f"repos/{repo}/actions/artifacts?name={quote(name, safe='')}&per_page=100")
    artifacts = answer.data.get("artifacts") if isinstance(answer.data, Mapping) else None
    if not isinstance(artifacts, list):
        raise GitHubError(f"GitHub listed the artifacts of {repo} without an 'artifacts' list")
    candidates = [a for a in artifacts if isinstance(a, Mapping) and _usable(a, name, branch)]
    if not candidates:
        return None
    # ISO 8601 times in UTC compare as text; the id breaks ties (ids only grow).
    return max(candidates, key=lambda a: (str(a.get("created_at", "")), int(a["id"])))


def _usable(artifact: Mapping[str, Any], name: str, branch: str) -> bool:
    run = artifact.get("workflow_run")
    if not isinstance(run, Mapping) or not isinstance(artifact.get("id"), int):
        return False
    own_repository = run.get("head_repository_id") == run.get("repository_id")
    return (
        artifact.get("name") == name
        and artifact.get("expired") is False
        and run.get("head_branch") == branch
        and own_repository
    )


def _report_in(api: GitHubApi, repo: str, artifact: Mapping[str, Any]) -> dict[str, Any]:
    where = f"artifact {artifact.get('name')} (id {artifact['id']})"
    archive = api.download(
        f"repos/{repo}/actions/artifacts/{artifact['id']}/zip", MAX_ARCHIVE_BYTES
    )
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            info = bundle.getinfo(REPORT_FILE)
            if info.file_size > MAX_ARCHIVE_BYTES:
                raise GitHubError(f"{where}: {REPORT_FILE} is larger than {MAX_ARCHIVE_BYTES}")
            data = json.loads(bundle.read(info))
    except KeyError:
        raise GitHubError(f"{where} holds no {REPORT_FILE}") from None
    except (zipfile.BadZipFile, ValueError) as error:
        raise GitHubError(f"{where} is not a zip archive with a JSON report ({error})") from None
    if (
        not isinstance(data, dict)
        or data.get("command", "deploy") != "deploy"
        or not isinstance(data.get("targets"), list)
    ):
        raise GitHubError(f"{where}: {REPORT_FILE} is not a deploy report")
    return data


def _describe(artifact: Mapping[str, Any], branch: str) -> str:
    run = artifact["workflow_run"]
    sha = str(run.get("head_sha") or "")[:7]
    commit = f", commit {sha}" if sha else ""
    return f"the deploy report of workflow run {run.get('id')} ({branch}{commit})"
