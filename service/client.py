"""A small client of the liandan API for `liandan submit/status/cancel --url` (stdlib only).

The token is LIANDAN_TOKEN, else the `.liandan-token` file that `liandan serve` writes in its
working directory when it generated one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(RuntimeError):
    """The API answered with an error; `detail` is its body's detail (a list for a 422)."""

    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}")


@dataclass
class ApiClient:
    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = 30.0

    def _call(self, method: str, path: str, body: bytes | None = None,
              content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace")
            raise ApiError(err.code, detail) from None
        return json.loads(raw) if kind.startswith("application/json") else raw.decode()

    def submit(self, spec_yaml: str) -> dict[str, Any]:
        return self._call("POST", "/studies", spec_yaml.encode(), "application/yaml")

    def study(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/studies/{urllib.parse.quote(name, safe='')}")

    def studies(self) -> list[dict[str, Any]]:
        return self._call("GET", "/studies?limit=1000")["data"]

    def cancel(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/studies/{urllib.parse.quote(name, safe='')}/cancel")

    def resume(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/studies/{urllib.parse.quote(name, safe='')}/resume")

    def report(self, name: str) -> str:
        return self._call("GET", f"/studies/{urllib.parse.quote(name, safe='')}/report")
