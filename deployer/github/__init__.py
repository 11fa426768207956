"""GitHub's side: the sticky pull-request comment, job summary, outputs, annotations, masks.

``job.ActionsJob`` is what the CLI does in a GitHub Actions job; ``report_to_github`` is what
it and ``deployer report --github`` call; ``actions`` builds the workflow-command lines the
CLI prints.
"""

from deployer.github.reporting import (
    GitHubOutcome,
    report_to_github,
    reporting_enabled,
)

__all__ = [
    "GitHubOutcome",
    "report_to_github",
    "reporting_enabled",
]
