#!/usr/bin/env python3
"""Generates the example deployment's sample partner files under sources/data/ (deterministic, seed 2026).

Run from the repository root: python3 ci/gen-sample-data.py. The files are committed; this script documents how
they were made and which bad records they contain on purpose.
"""
import gzip
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

R = random.Random(2026)
OUT = Path("sources/data")
FIRST = ["Jean", "Marie", "Karim", "Sophie", "Lucas", "Inès", "Mehdi", "Léa", "Thomas", "Chloé", "Yanis", "Camille", "Françoise", "Aurélien"]
LAST = ["Martin", "Bernard", "Dubois", "Benali", "Moreau", "Lefèvre", "Garcia", "Roux", "Fournier", "Mercier", "Haddad", "Girard", "Orsini"]
# Approximate centres of Marseille's 16 arrondissements.
ARR = {1: (43.2999, 5.3838), 2: (43.3100, 5.3650), 3: (43.3120, 5.3800), 4: (43.3050, 5.4000), 5: (43.2930, 5.3990),
       6: (43.2880, 5.3800), 7: (43.2820, 5.3600), 8: (43.2500, 5.3800), 9: (43.2450, 5.4300), 10: (43.2750, 5.4250),
       11: (43.2900, 5.4800), 12: (43.3050, 5.4500), 13: (43.3500, 5.4300), 14: (43.3450, 5.3950), 15: (43.3550, 5.3600),
       16: (43.3600, 5.3200)}
PARIS = timezone(timedelta(hours=1))


def place():
    a = R.randint(1, 16)
    lat, lon = ARR[a]
    return a, round(lat + R.uniform(-0.01, 0.01), 5), round(lon + R.uniform(-0.01, 0.01), 5)


def phone():
    return "0" + str(R.choice([6, 7])) + " " + " ".join(f"{R.randint(0, 99):02d}" for _ in range(4))


def incidents():
    d = OUT / "ddsp"
    d.mkdir(parents=True, exist_ok=True)
    natures = ["tapage", "agression", "vol", "accident", "stationnement", "incendie", "rixe", "degradation"]
    notes = ["Appel du voisinage, musique forte après minuit", "Véhicule garé sur le trottoir devant l'école",
             "Altercation près de la station de métro", "Vol à l'arraché, suspect en fuite vers le Vieux-Port",
             "Collision entre un scooter et une voiture, pas de blessé", "Départ de feu de poubelle, éteint à l'arrivée",
             "Rixe à la sortie d'un bar, deux personnes interpellées", "Tags sur la façade de la mairie de secteur"]
    header = "numero_intervention;date_heure;nature;latitude;longitude;arrondissement;nom_declarant;tel_declarant;observations"
    n = 0
    for f, (day0, count, gz) in enumerate([(1, 500, False), (8, 500, False), (15, 500, True)]):
        lines = [header]
        for i in range(count):
            n += 1
            a, lat, lon = place()
            t = datetime(2026, 11, day0, 0, 0) + timedelta(minutes=R.randint(0, 7 * 24 * 60 - 1))
            row = [f"DDSP-2026-{n:06d}", t.strftime("%d/%m/%Y %H:%M"), R.choice(natures),
                   f"{lat:.5f}".replace(".", ","), f"{lon:.5f}".replace(".", ","), str(a),
                   f"{R.choice(FIRST)} {R.choice(LAST)}", phone(), R.choice(notes)]
            # Bad records, on purpose (each is quarantined with its reason):
            if i == 17:
                row[1] = "31/11/2026 25:61"          # impossible date
            if i == 42:
                row[3] = "48,85660"                   # latitude outside the city (Paris)
            if i == 99:
                row[2] = "cambriolage"                # category not in the allowed list
            if i == 123:
                row = row[:5]                         # truncated line: too few fields
            if i == 250:
                row[0] = ""                           # missing key
            lines.append(";".join(row))
        data = ("\r\n".join(lines) + "\r\n").encode("windows-1252")
        name = f"incidents_2026-11-{day0:02d}.csv" + (".gz" if gz else "")
        if gz:
            data = gzip.compress(data, mtime=0)
        (d / name).write_bytes(data)


def interventions():
    d = OUT / "bmpm"
    d.mkdir(parents=True, exist_ok=True)
    kinds = ["secours_personne", "incendie", "accident_circulation", "fuite_gaz", "inondation"]
    n = 0
    for f in range(2):
        out = []
        for i in range(400):
            n += 1
            a, lat, lon = place()
            alert = datetime(2026, 11, 1 + f * 14, tzinfo=PARIS) + timedelta(minutes=R.randint(0, 14 * 24 * 60 - 1))
            arrival = alert + timedelta(seconds=R.randint(240, 1500))
            rec = {"id": f"BMPM-{n:06d}", "alerte": alert.isoformat(), "arrivee": arrival.isoformat(),
                   "type": R.choice(kinds), "arrondissement": a, "position": {"lat": lat, "lon": lon},
                   "victimes": R.choice([0, 0, 0, 1, 1, 2, 3]), "age_victime": R.choice([None, R.randint(1, 95)]),
                   "appelant": {"telephone": phone()}}
            line = json.dumps(rec, ensure_ascii=False)
            if i == 10:
                line = line[: len(line) // 2]          # truncated JSON line
            if i == 77:
                rec["alerte"] = "hier soir"            # not a timestamp
                line = json.dumps(rec, ensure_ascii=False)
            if i == 150:
                line = "[1, 2, 3]"                      # not an object
            out.append(line)
        (d / f"interventions_{f + 1:02d}.ndjson").write_text("\n".join(out) + "\n", encoding="utf-8")


def weather():
    d = OUT / "meteo"
    d.mkdir(parents=True, exist_ok=True)
    stations = {"13055001": "Marseille-Longchamp", "13054001": "Marignane"}
    for f, start in enumerate([datetime(2026, 11, 1), datetime(2026, 11, 11)]):
        lines = ["station,observed_at,temperature_c,precipitation_mm,wind_kmh,humidity_pct"]
        for st in stations:
            for h in range(24 * 10):
                t = start + timedelta(hours=h)
                temp = 12 + 6 * __import__("math").sin((t.hour - 9) / 24 * 6.283) + R.uniform(-1.5, 1.5)
                rain = max(0.0, R.gauss(0, 1.2)) if R.random() < 0.15 else 0.0
                lines.append(f"{st},{t.strftime('%Y-%m-%dT%H:00:00Z')},{temp:.1f},{rain:.1f},{R.randint(0, 90)},{R.randint(40, 98)}")
        # The second file repeats the last 6 hours of the first with corrected values: upsert keeps the latest.
        if f == 1:
            for st in stations:
                for h in range(6):
                    t = datetime(2026, 11, 11) - timedelta(hours=6 - h)
                    lines.append(f"{st},{t.strftime('%Y-%m-%dT%H:00:00Z')},{14.0 + h / 10:.1f},0.0,12,70")
            lines.append("13055001,2026-11-20T10:00:00Z,n/a,0.0,12,70")   # bad temperature
        (d / f"observations_{f + 1:02d}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def events():
    d = OUT / "agenda"
    d.mkdir(parents=True, exist_ok=True)
    venues = [("Stade Vélodrome", 43.2698, 5.3959, 8), ("Le Dôme", 43.3130, 5.3960, 4), ("Vieux-Port", 43.2951, 5.3740, 1),
              ("Parc Borély", 43.2600, 5.3780, 8), ("Friche la Belle de Mai", 43.3108, 5.3905, 3),
              ("Cours Julien", 43.2942, 5.3843, 6), ("Orange Vélodrome Esplanade", 43.2710, 5.3950, 8)]
    kinds = ["concert", "match", "marché", "festival", "manifestation", "spectacle"]
    evs = []
    for i in range(60):
        v = R.choice(venues)
        start = datetime(2026, 11, 1, tzinfo=PARIS) + timedelta(hours=R.randint(8, 29 * 24))
        evs.append({"event_id": f"AGENDA-{i + 1:04d}", "title": f"{R.choice(kinds).capitalize()} — {v[0]}",
                    "category": R.choice(kinds), "venue": v[0], "lat": v[1], "lon": v[2], "arrondissement": v[3],
                    "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=R.randint(2, 10))).isoformat(),
                    "expected_attendance": R.choice([300, 1200, 5000, 20000, 65000]), "free_entry": R.random() < 0.4})
    evs[13]["starts_at"] = "bientôt"                     # bad timestamp
    evs.append("not an event")                           # not an object
    doc = {"source": "Ville de Marseille — agenda", "generated": "2026-11-28T06:00:00+01:00", "data": {"events": evs}}
    (d / "agenda_2026-11.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")


def reports():
    d = OUT / "signalements"
    d.mkdir(parents=True, exist_ok=True)
    topics = ["bruit", "dépôt sauvage", "éclairage", "voirie", "stationnement gênant", "insécurité"]
    texts = ["Musique très forte tous les soirs vers 23h, \"impossible de dormir\"",
             "Encombrants abandonnés au coin de la rue depuis une semaine",
             "Lampadaire en panne, la rue est très sombre la nuit",
             "Nid-de-poule dangereux pour les deux-roues,\nsignalé plusieurs fois",
             "Voitures garées sur le passage piéton devant la crèche",
             "Groupe qui se rassemble le soir, sentiment d'insécurité"]
    n = 0
    for f in range(2):
        lines = ["report_id,submitted_at,topic,arrondissement,latitude,longitude,email,age,text"]
        for i in range(200):
            n += 1
            a, lat, lon = place()
            t = datetime(2026, 11, 1 + f * 14, 8) + timedelta(minutes=R.randint(0, 13 * 24 * 60))
            email = f"{R.choice(FIRST).lower()}.{R.choice(LAST).lower()}{R.randint(1, 99)}@example.fr"
            text = R.choice(texts).replace('"', '""')
            age = str(R.randint(18, 85)) if R.random() < 0.7 else ""
            row = f'SIG-{n:05d},{t.strftime("%Y-%m-%d %H:%M:%S")},{R.choice(topics)},{a},{lat},{lon},{email},{age},"{text}"'
            if i == 33:
                row = row.replace(f",{a},", ",17,", 1)   # arrondissement out of range
            if i == 66:
                row += ",extra"                         # one field too many
            lines.append(row)
        (d / f"signalements_{f + 1:02d}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    incidents()
    interventions()
    weather()
    events()
    reports()
