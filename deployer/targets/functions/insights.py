"""A function app's logs from Application Insights, when deploy.yaml names its component
(``application_insights``): the Functions host sends its traces and exceptions there once
the app has ``APPLICATIONINSIGHTS_CONNECTION_STRING``, and they outlive the container.

They are read with the Azure Monitor Logs query API (azure-monitor-query's
``LogsQueryClient.query_resource`` on the component's resource id), at the cloud's endpoint
(``api.loganalytics.io`` in AzureCloud; a custom cloud's ``logAnalyticsResourceId``), with
the same credential as every other call. The identity needs read access to the component
(Reader, or Monitoring Reader).

Telemetry arrives in Application Insights one to three minutes after it is written, and not
always in order. ``follow`` therefore polls, asks again for a window that reaches back
before the newest row it has shown, and drops the rows it has already printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError

from deployer.azure.arm_errors import RETRY_OPTIONS
from deployer.errors import DeployFailed, UserError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

TABLES = "union traces, exceptions"
COLUMNS = "timestamp, itemType, severityLevel, message, outerMessage, cloud_RoleInstance"
TAIL_SPAN = timedelta(days=1)  # how far back the last lines are looked for
POLL_S = 10.0
LATE_S = 300.0  # rows may arrive this much later than newer ones: asked for again
FOLLOW_BATCH = 1000
SEVERITY = {0: "VERBOSE", 1: "INFO", 2: "WARNING", 3: "ERROR", 4: "CRITICAL"}


class InsightsLogs:
    """The traces and exceptions of app ``app`` in component ``resource_id``."""

    def __init__(
        self, app: str, resource_id: str, credential: TokenCredential, endpoint: str
    ) -> None:
        try:  # by name: only reading logs from Application Insights needs it
            from azure.monitor.query import LogsQueryClient
        except ImportError:
            raise UserError(
                "reading logs from Application Insights needs azure-monitor-query: "
                "pip install 'deployer[azure]'"
            ) from None

        self.app = app
        self.resource_id = resource_id
        self.client = LogsQueryClient(credential, endpoint=endpoint, **RETRY_OPTIONS)
        self.poll_s = POLL_S

    def tail(self, lines: int) -> list[str]:
        return [_line(row) for row in self._last(lines)]

    def _last(self, lines: int) -> list[list[Any]]:
        rows = self._query(
            f"{TABLES}\n| where cloud_RoleName =~ '{_quoted(self.app)}'\n"
            f"| order by timestamp desc\n| take {int(lines)}\n| project {COLUMNS}",
            TAIL_SPAN,
        )
        return rows[::-1]

    def follow(self, tail: int) -> Iterator[str]:
        """The last ``tail`` rows, then new ones as they arrive, each once."""
        shown: dict[tuple[Any, ...], datetime] = {}
        newest = datetime.now(UTC)
        for row in self._last(tail):
            shown[tuple(row)] = row[0]
            yield _line(row)
        while True:
            since = newest - timedelta(seconds=LATE_S)
            rows = self._query(
                f"{TABLES}\n| where cloud_RoleName =~ '{_quoted(self.app)}'\n"
                f"| where timestamp > datetime({since.isoformat().replace('+00:00', 'Z')})\n"
                f"| order by timestamp asc\n| take {FOLLOW_BATCH}\n| project {COLUMNS}",
                None,
            )
            for row in rows:
                key = tuple(row)
                if key in shown:
                    continue
                shown[key] = row[0]
                newest = max(newest, row[0])
                yield _line(row)
            for key in [k for k, at in shown.items() if at < since]:
                del shown[key]  # older than any window asked again: cannot come back
            time.sleep(self.poll_s)

    def close(self) -> None:
        self.client.close()

    def _query(self, query: str, span: timedelta | None) -> list[list[Any]]:
        from azure.monitor.query import LogsQueryPartialResult

        try:
            result = self.client.query_resource(self.resource_id, query, timespan=span)
        except HttpResponseError as error:
            raise self._refused(error) from error
        except AzureError as error:
            raise DeployFailed(
                f"cannot reach Azure Monitor for {self.app}'s logs: {error}"
            ) from error
        if isinstance(result, LogsQueryPartialResult):  # some rows, and why not all
            tables = result.partial_data
        else:
            tables = result.tables
        return [list(row) for table in tables for row in table.rows]

    def _refused(self, error: HttpResponseError) -> Exception:
        status = error.status_code
        code = str(getattr(getattr(error, "error", None), "code", "") or "")
        where = f"Application Insights ({self.resource_id})"
        if status == 401:
            return UserError(
                f"{where} refused the token: sign in again ('az login', or azure/login in "
                "GitHub Actions) or check AZURE_CLIENT_* and the tenant"
            )
        if code == "InvalidTokenError":  # a token for another audience
            return UserError(
                f"{where} refused the token as not valid for it: the cloud's Azure Monitor "
                "Logs endpoint (logAnalyticsResourceId in its description) is its audience; "
                "check it"
            )
        if status == 403:
            return UserError(
                f"{where} denied reading {self.app}'s logs ({code}): the identity deployer "
                "runs as needs read access to the component (the Monitoring Reader role, "
                'e.g. \'az role assignment create --role "Monitoring Reader" --assignee '
                "<its id> --scope <the component's id>')"
            )
        if status == 404:
            return UserError(
                f"{where} was not found ({code}): check application_insights in deploy.yaml "
                "('az monitor app-insights component show --query id' prints it)"
            )
        message = " ".join(str(getattr(error, "message", error)).split())
        return DeployFailed(f"{where} answered {status} ({code}): {message}")


def _quoted(text: str) -> str:
    """``text`` inside a single-quoted Kusto string literal."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _line(row: list[Any]) -> str:
    at, item, severity, message, outer, instance = (row + [None] * 6)[:6]
    when = at.isoformat().replace("+00:00", "Z") if isinstance(at, datetime) else str(at)
    level = SEVERITY.get(severity, str(severity)) if severity is not None else ""
    text = message or outer or ""  # an exception's row has no message (Kusto: "")
    if item == "exception":
        text = f"exception: {text}"
    where = f"[{instance}]" if instance else ""
    return " ".join(part for part in (when, level, where, text) if part)
