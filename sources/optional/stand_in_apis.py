#!/usr/bin/env python3
"""A local stand-in for two partner APIs of the example deployment, so that its optional `http` sources can run
without the partners: Météo-France's observations (bearer token, page numbers, `since` cursor) and the city's
events agenda (next-page URL in the body). Sample data only; standard library only.

    python3 sources/optional/stand_in_apis.py [--port 8089]

It prints `PORT <n>` once listening. The token it expects is the one in the environment variable
METEO_API_TOKEN (any value: export the same one for `lakehouse`).
"""
import argparse
import datetime
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATIONS = {"13055001": "Marseille-Longchamp", "13054001": "Marignane"}
START = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)


def observations():
    """Hourly observations of November 2026 up to the 10th; each published 20 minutes after the hour."""
    out = []
    for hour in range(24 * 10):
        at = START + datetime.timedelta(hours=hour)
        for i, station in enumerate(STATIONS):
            out.append({
                "station": station,
                "observedAt": at.isoformat().replace("+00:00", "Z"),
                "temperatureC": round(12 + 6 * ((hour % 24) / 24) - 2 * i, 1),
                "precipitationMm": round(((hour * 7 + i) % 13) / 10, 1),
                "windKmh": (hour * 3 + i * 5) % 60,
                "updatedAt": (at + datetime.timedelta(minutes=20)).isoformat().replace("+00:00", "Z"),
            })
    return out


EVENTS = [
    {"id": "EVT-2611-%03d" % n, "title": title, "venue": venue, "startsAt": starts, "attendance": attendance}
    for n, (title, venue, starts, attendance) in enumerate([
        ("Marché de Noël du Vieux-Port", "Quai de la Fraternité", "2026-11-20T10:00:00+01:00", 15000),
        ("OM – Lens", "Orange Vélodrome", "2026-11-22T21:00:00+01:00", 62000),
        ("Foire aux santons", "Cours d'Estienne d'Orves", "2026-11-15T09:00:00+01:00", 8000),
        ("Concert au Dôme", "Le Dôme", "2026-11-28T20:30:00+01:00", 8500),
        ("Semi-marathon des Calanques", "Parc Borély", "2026-11-29T08:00:00+01:00", 4000),
    ], start=1)
]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/meteo/v1/observations":
            if self.headers.get("Authorization") != "Bearer " + os.environ.get("METEO_API_TOKEN", ""):
                return self.answer(401, {"error": "unauthorized"})
            since = q.get("since", "1970-01-01T00:00:00Z")
            rows = [o for o in observations() if o["updatedAt"] >= since]
            page, size = int(q.get("page", "1")), int(q.get("per_page", "100"))
            return self.answer(200, {"data": rows[(page - 1) * size: page * size], "page": page})
        if url.path == "/agenda/v2/events":
            page = int(q.get("page", "1"))
            chunk = EVENTS[(page - 1) * 2: page * 2]
            more = page * 2 < len(EVENTS)
            return self.answer(200, {"events": chunk, "next": f"/agenda/v2/events?page={page + 1}" if more else None})
        self.answer(404, {"error": "not found"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8089)
    port = parser.parse_args().port
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
