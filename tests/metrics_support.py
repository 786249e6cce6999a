"""Reading Prometheus endpoints in tests: the worker's, the relay's and the API's."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.workers_support import wait_until


class Scrape:
    """One scrape of an endpoint: its samples, by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    @property
    def names(self) -> set[str]:
        """The series with at least one sample (``# HELP`` alone does not count)."""
        return {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
        return sum(
            value
            for found, have, value in self.samples
            if found == name and all(have.get(k) == v for k, v in labels.items())
        )


def scrape(url: str) -> Scrape:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return Scrape(response.text)


def scrape_until(
    url: str, done: Callable[[Scrape], bool], what: str, timeout: float = 20
) -> Scrape:
    """Scrape ``url`` until ``done`` holds (a count incremented after a commit the test
    waited for may lag it by a moment); fail after ``timeout`` with the last scrape."""
    last: list[Scrape] = []

    def check() -> bool:
        last[:] = [scrape(url)]
        return done(last[0])

    try:
        wait_until(check, timeout, what, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nlast scrape of {url}:\n{last[0].text if last else ''}"
        ) from None
    return last[0]
