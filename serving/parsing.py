"""Request bodies -> validated observation arrays, or a :class:`RequestError` naming the field at fault.

Requests are parsed by hand (``json.loads``) and validated with numpy, not
per-element pydantic models: at thousands of requests a second on two cores
the request path must stay cheap. Errors answer 422 (413 for too many
observations) with the field they concern (``observations[3].mission``) in
``field`` and ``detail``.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import numpy as np

from envs.tasks import TASKS
from envs.wrappers import FAMILIES, TOKEN_IDS, _WORD, tokenize
from serving.runtime import IMAGE_SHAPE, Batch

try:
    import orjson

    load_json, dump_json = orjson.loads, orjson.dumps
except ImportError:  # the standard library is fast enough; orjson is faster
    load_json = json.loads

    def dump_json(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


IMAGE_LIMITS = np.array([11, 6, 4])  # object, colour, state ids (MiniGrid's OBJECT_TO_IDX, COLOR_TO_IDX, states/agent dir)
OBS_KEYS = ("image", "direction", "mission", "task")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, the ``field`` at fault, a one-line message."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def body(self) -> bytes:
        return dump_json({"detail": f"{self.field}: {self.message}", "field": self.field})


def _close(word: str, choices) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(close)}?" if close else ""


class Parser:
    """Body bytes -> (:class:`Batch`, deterministic), or a :class:`RequestError` naming the field."""

    def __init__(self, *, mission_length: int, max_batch: int) -> None:
        self.mission_length = mission_length
        self.max_batch = max_batch
        self._missions: dict[str, np.ndarray] = {}
        self._tasks = {name: (spec.index, FAMILIES.index(spec.family)) for name, spec in TASKS.items()}

    def tokens(self, mission: Any, i: int) -> np.ndarray:
        found = self._missions.get(mission) if isinstance(mission, str) else None
        if found is not None:
            return found
        field = f"observations[{i}].mission"
        if not isinstance(mission, str):
            raise RequestError(422, field, f"must be the mission text (a string), not {type(mission).__name__}.")
        words = _WORD.findall(mission.lower())
        unknown = [w for w in words if w not in TOKEN_IDS]
        if unknown:
            raise RequestError(422, field, f"the word {unknown[0]!r} is not in the agent's vocabulary "
                                           f"(envs.wrappers.VOCAB).{_close(unknown[0], TOKEN_IDS)}")
        if not words:
            raise RequestError(422, field, f"{mission!r} holds no words.")
        ids = tokenize(mission, self.mission_length)  # every word known: the ids the agent saw in training
        if len(self._missions) < 100_000:  # missions are few; the bound keeps a hostile client from growing it
            self._missions[mission] = ids
        return ids

    def task(self, name: Any, i: int) -> tuple[int, int]:
        found = self._tasks.get(name) if isinstance(name, str) else None
        if found is None:
            field = f"observations[{i}].task"
            if not isinstance(name, str):
                raise RequestError(422, field, f"must be a registered task's name (a string), not {type(name).__name__}.")
            raise RequestError(422, field, f"unknown task {name!r}.{_close(name, self._tasks)} "
                                           "Known tasks: python train.py --list-tasks.")
        return found

    def parse(self, body: bytes) -> tuple[Batch, bool]:
        try:
            data = load_json(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(422, "body", f"is not JSON ({str(err).splitlines()[0][:120]}).") from None
        if not isinstance(data, dict):
            raise RequestError(422, "body", 'must be a JSON object {"observations": [...], "deterministic": false}.')
        extra = [k for k in data if k not in ("observations", "deterministic")]
        if extra:
            raise RequestError(422, str(extra[0]), f"is not a field of the request.{_close(str(extra[0]), ('observations', 'deterministic'))}")
        deterministic = data.get("deterministic", False)
        if not isinstance(deterministic, bool):
            raise RequestError(422, "deterministic", f"must be true or false, not {deterministic!r}.")
        obs = data.get("observations")
        if not isinstance(obs, list) or not obs:
            raise RequestError(422, "observations", "must be a non-empty list of observations.")
        if len(obs) > self.max_batch:
            raise RequestError(413, "observations", f"holds {len(obs)} observations; this server takes at most "
                                                    f"{self.max_batch} a request (--max-batch); split the request.")
        n = len(obs)
        direction = np.empty(n, dtype=np.int64)
        task = np.empty(n, dtype=np.int64)
        family = np.empty(n, dtype=np.int64)
        mission = np.empty((n, self.mission_length), dtype=np.int64)
        images = []
        for i, o in enumerate(obs):
            if type(o) is not dict or len(o) != 4 or any(k not in o for k in OBS_KEYS):
                self._bad_keys(o, i)
            d = o["direction"]
            if type(d) is not int or not 0 <= d <= 3:
                raise RequestError(422, f"observations[{i}].direction", f"must be an integer 0..3, not {d!r}.")
            direction[i] = d
            mission[i] = self.tokens(o["mission"], i)
            task[i], family[i] = self.task(o["task"], i)
            images.append(o["image"])
        return Batch(self.images(images), direction, mission, task, family), deterministic

    @staticmethod
    def _bad_keys(o: Any, i: int) -> None:
        field = f"observations[{i}]"
        if not isinstance(o, dict):
            raise RequestError(422, field, 'must be an object {"image", "direction", "mission", "task"}.')
        missing = [k for k in OBS_KEYS if k not in o]
        if missing:
            raise RequestError(422, f"{field}.{missing[0]}", "is missing.")
        extra = [k for k in o if k not in OBS_KEYS]
        raise RequestError(422, f"{field}.{extra[0]}", f"is not a field of an observation.{_close(str(extra[0]), OBS_KEYS)}")

    @staticmethod
    def images(images: list) -> np.ndarray:
        """The nested lists as uint8 ``(B, 7, 7, 3)``; the first bad one named otherwise."""
        try:
            arr = np.array(images)
        except (ValueError, TypeError):
            arr = None
        if arr is not None and arr.dtype.kind in "iu" and arr.shape[1:] == IMAGE_SHAPE:
            bad = ((arr < 0) | (arr >= IMAGE_LIMITS)).reshape(len(arr), -1).any(1)
            if not bad.any():
                return arr.astype(np.uint8)
        for i, image in enumerate(images):  # the slow path: find and name the bad one
            field = f"observations[{i}].image"
            try:
                one = np.array(image)
            except (ValueError, TypeError):
                raise RequestError(422, field, "must be a 7x7x3 nested list of integers (MiniGrid's obs['image']).") from None
            if one.shape != IMAGE_SHAPE:
                raise RequestError(422, field, f"has shape {one.shape}; it must be {IMAGE_SHAPE} (MiniGrid's obs['image']).")
            if one.dtype.kind not in "iu":
                raise RequestError(422, field, f"must hold integers, not {one.dtype.kind!r} values.")
            out = (one < 0) | (one >= IMAGE_LIMITS)
            if out.any():
                y, x, c = (int(v) for v in np.argwhere(out)[0])
                raise RequestError(422, field, f"[{y}][{x}][{c}] = {int(one[y, x, c])} is outside 0..{IMAGE_LIMITS[c] - 1} "
                                               "(object, colour, state ids).")
        raise RequestError(422, "observations", "the images do not stack into (B, 7, 7, 3).")  # not reached
