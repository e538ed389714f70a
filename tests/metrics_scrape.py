"""Reading the running bot's `GET /metrics` (test_metrics.py, test_call_counts.py): each sample by
its name and labels, and one sample's value."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BotUnderTest

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(bot: BotUnderTest) -> Samples:
    async with bot.http.get(f"http://127.0.0.1:{bot.runtime.port}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        return parse(await response.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
