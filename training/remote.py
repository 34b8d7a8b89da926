"""A served agent as a policy: ``POST /v1/act`` of ``serve.py`` over HTTP, for ``evaluate.py --server``.

The server takes observations in MiniGrid's own terms (the 7x7x3 symbolic
image as nested lists, the direction, the mission as text, the task's name)
and answers actions, action probabilities and values. :class:`RemotePolicy`
sends one request per vector step (all the slots' observations together) on
one kept-alive connection (httpx), so evaluating over loopback costs a few
milliseconds a step on top of the environments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

TOKEN_ENV = "OMNIGRID_TOKEN"


class RemotePolicy:
    """The agent behind ``url`` (``http://host:port``).

    Args:
        url: the server's base URL.
        token: bearer token; default the ``OMNIGRID_TOKEN`` environment variable (none if unset).
        timeout: seconds a request may take.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        import httpx  # the serving extra; imported here so that evaluation without a server needs none of it

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--server {url!r} is not an http(s) URL; give one such as http://127.0.0.1:8000.")
        self.url = url.rstrip("/")
        token = os.environ.get(TOKEN_ENV, "") if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._errors = httpx.HTTPError

    def check(self) -> None:
        """Raise ValueError (one line) unless the server answers ``/healthz``."""
        try:
            response = self._http.get("/healthz")
        except self._errors as err:
            raise ValueError(f"--server {self.url}: no answer ({type(err).__name__}: {err}); is serve.py running there?") from None
        if response.status_code != 200:
            raise ValueError(f"--server {self.url}: /healthz answered {response.status_code}: {response.text[:200]}")

    def act(
        self, images: np.ndarray, directions: np.ndarray, missions: Sequence[str], task: str, *, deterministic: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Actions ``(B,)`` and action probabilities ``(B, 7)`` for a batch of symbolic observations of ``task``."""
        body = {
            "observations": [
                {"image": image.tolist(), "direction": int(direction), "mission": mission, "task": task}
                for image, direction, mission in zip(images, directions, missions)
            ],
            "deterministic": deterministic,
        }
        try:
            response = self._http.post("/v1/act", json=body)
        except self._errors as err:
            raise RuntimeError(f"--server {self.url}: the request failed ({type(err).__name__}: {err})") from None
        if response.status_code != 200:
            raise RuntimeError(f"--server {self.url}: /v1/act answered {response.status_code}: {response.text[:300]}")
        answer = response.json()
        actions = np.asarray(answer["actions"], dtype=np.int64)
        probs = np.asarray(answer["probs"], dtype=np.float64)
        if actions.shape != (len(missions),) or probs.shape[0] != len(missions):
            raise RuntimeError(f"--server {self.url}: {len(actions)} actions for {len(missions)} observations")
        return actions, probs

    def close(self) -> None:
        self._http.close()
