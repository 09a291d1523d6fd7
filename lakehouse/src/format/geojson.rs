//! GeoJSON (RFC 7946): a `FeatureCollection`, one record per feature.
//!
//! A feature is read as a JSON record (so columns use the JSON rules and dotted paths): its `properties` are
//! reached as `properties.<name>`, its `id` as `id`, its `geometry` as **WKT** text (`POINT (2.35 48.85)`,
//! `POLYGON ((…))`), and two fields are added: `lat` and `lon`, a representative point of the geometry — the point
//! itself, else the centre of its bounding box — to be declared (and generalized) like any coordinate.
//!
//! Coordinates must be WGS 84 longitude/latitude, as RFC 7946 says: a document declaring another `crs` (older
//! exports in Lambert-93, EPSG:2154) is not taken, with that reason; a feature whose coordinates fall outside the
//! WGS 84 ranges, or whose geometry is not valid GeoJSON, is quarantined with the reason.

use std::io::Read;

use serde_json::{Map, Number, Value};

use super::{ReadError, RowEmitter, RowError};

pub fn read(input: Box<dyn Read + Send>, rows: &mut RowEmitter<'_, '_>) -> Result<(), ReadError> {
    let Some(doc) = super::json::read_whole(input, "GeoJSON", "split the export")? else {
        return Ok(());
    };
    let malformed = |m: &str| ReadError::Malformed(m.to_string());
    match doc.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => {}
        Some(other) => {
            return Err(ReadError::Malformed(format!(
                "the document is a GeoJSON `{other}`, not a `FeatureCollection`"
            )));
        }
        None => return Err(malformed("the document has no `type`: not GeoJSON")),
    }
    if let Some(crs) = doc.get("crs") {
        let name = crs.pointer("/properties/name").and_then(Value::as_str).unwrap_or("an unnamed one");
        if !is_wgs84(name) {
            return Err(ReadError::Malformed(format!(
                "the coordinates are in {name}, not WGS 84 longitude/latitude: export GeoJSON as RFC 7946 says \
                 (ogr2ogr -t_srs EPSG:4326)"
            )));
        }
    }
    let Some(Value::Array(features)) = doc.get("features") else {
        return Err(malformed("the FeatureCollection has no `features` array"));
    };
    for feature in features {
        let raw = || serde_json::to_vec(feature).unwrap_or_default();
        let Value::Object(obj) = feature else {
            rows.bad(None, RowError::record("the feature is not a JSON object"), raw())?;
            continue;
        };
        if let Some(Value::Object(properties)) = obj.get("properties") {
            rows.note_new_keys(properties, "properties.")?;
        }
        match as_record(obj) {
            Ok(record) => super::json::record(&record, None, raw, rows)?,
            Err(reason) => rows.bad(None, RowError { column: Some("geometry".into()), reason }, raw())?,
        }
    }
    Ok(())
}

/// Names of WGS 84 longitude/latitude in `crs` members.
fn is_wgs84(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.ends_with("CRS84") || n.ends_with("EPSG::4326") || n == "EPSG:4326"
}

/// The feature as a record: its members, `geometry` as WKT, `lat` and `lon`.
fn as_record(feature: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut record = feature.clone();
    let (wkt, point) = match feature.get("geometry") {
        None | Some(Value::Null) => (Value::Null, None),
        Some(g) => {
            let mut bounds = Bounds::default();
            let mut text = String::new();
            geometry(g, &mut text, &mut bounds)?;
            (Value::String(text), Some(bounds.point(g)))
        }
    };
    record.insert("geometry".into(), wkt);
    let coordinate = |v: f64| Number::from_f64(v).map_or(Value::Null, Value::Number);
    let (lon, lat) = point.flatten().map_or((Value::Null, Value::Null), |(x, y)| (coordinate(x), coordinate(y)));
    record.insert("lon".into(), lon);
    record.insert("lat".into(), lat);
    Ok(record)
}

/// The bounding box of the positions seen.
#[derive(Default)]
struct Bounds {
    seen: Option<[f64; 4]>,
}

impl Bounds {
    fn add(&mut self, x: f64, y: f64) {
        let b = self.seen.get_or_insert([x, y, x, y]);
        b[0] = b[0].min(x);
        b[1] = b[1].min(y);
        b[2] = b[2].max(x);
        b[3] = b[3].max(y);
    }

    /// A point's own position, else the centre of the box; `None` for an empty geometry.
    fn point(&self, g: &Value) -> Option<(f64, f64)> {
        let [x0, y0, x1, y1] = self.seen?;
        if g.get("type").and_then(Value::as_str) == Some("Point") {
            return Some((x0, y0));
        }
        Some(((x0 + x1) / 2.0, (y0 + y1) / 2.0))
    }
}

/// Appends the WKT of a GeoJSON geometry.
fn geometry(g: &Value, out: &mut String, bounds: &mut Bounds) -> Result<(), String> {
    let kind = g.get("type").and_then(Value::as_str).ok_or("a geometry without `type`")?;
    if kind == "GeometryCollection" {
        let Some(Value::Array(members)) = g.get("geometries") else {
            return Err("a GeometryCollection without a `geometries` array".into());
        };
        out.push_str("GEOMETRYCOLLECTION ");
        if members.is_empty() {
            out.push_str("EMPTY");
            return Ok(());
        }
        out.push('(');
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            geometry(m, out, bounds)?;
        }
        out.push(')');
        return Ok(());
    }
    // How deep the coordinates nest: Point 0 (a position), LineString 1, Polygon 2, MultiPolygon 3.
    let (name, depth) = match kind {
        "Point" => ("POINT", 0),
        "MultiPoint" => ("MULTIPOINT", 1),
        "LineString" => ("LINESTRING", 1),
        "MultiLineString" => ("MULTILINESTRING", 2),
        "Polygon" => ("POLYGON", 2),
        "MultiPolygon" => ("MULTIPOLYGON", 3),
        other => return Err(format!("unknown geometry type `{other}`")),
    };
    let coordinates = g.get("coordinates").ok_or_else(|| format!("a {kind} without `coordinates`"))?;
    out.push_str(name);
    out.push(' ');
    if coordinates.as_array().is_some_and(Vec::is_empty) {
        out.push_str("EMPTY");
        return Ok(());
    }
    if depth == 0 {
        out.push('(');
        position(coordinates, out, bounds, kind)?;
        out.push(')');
        return Ok(());
    }
    // A MultiPoint's points are written `(x y)` each, as the OGC grammar has them.
    nested(coordinates, depth, kind == "MultiPoint", out, bounds, kind)
}

fn nested(
    v: &Value,
    depth: usize,
    wrap_points: bool,
    out: &mut String,
    b: &mut Bounds,
    kind: &str,
) -> Result<(), String> {
    let Value::Array(items) = v else {
        return Err(format!("the coordinates of a {kind} are not nested arrays as its type needs"));
    };
    out.push('(');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if depth == 1 {
            if wrap_points {
                out.push('(');
            }
            position(item, out, b, kind)?;
            if wrap_points {
                out.push(')');
            }
        } else {
            nested(item, depth - 1, wrap_points, out, b, kind)?;
        }
    }
    out.push(')');
    Ok(())
}

/// A position `[lon, lat(, alt)]`, written `lon lat`, checked against the WGS 84 ranges.
fn position(v: &Value, out: &mut String, bounds: &mut Bounds, kind: &str) -> Result<(), String> {
    let Some(items) = v.as_array().filter(|a| (2..=3).contains(&a.len())) else {
        return Err(format!("a position of a {kind} is not [longitude, latitude] (or with an altitude)"));
    };
    let mut numbers = [0f64; 3];
    for (i, item) in items.iter().enumerate() {
        numbers[i] = item.as_f64().ok_or_else(|| format!("a coordinate of a {kind} is not a number"))?;
    }
    let (x, y) = (numbers[0], numbers[1]);
    if !(-180.0..=180.0).contains(&x) || !(-90.0..=90.0).contains(&y) {
        return Err(format!(
            "a position of a {kind} is outside WGS 84 longitude/latitude ranges (projected coordinates, e.g. \
             Lambert-93? export as RFC 7946 says)"
        ));
    }
    bounds.add(x, y);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&item.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wkt(g: Value) -> Result<(String, Option<(f64, f64)>), String> {
        let mut out = String::new();
        let mut bounds = Bounds::default();
        geometry(&g, &mut out, &mut bounds)?;
        Ok((out, bounds.point(&g)))
    }

    #[test]
    fn geometries_are_written_as_ogc_wkt_with_a_representative_point() {
        let point = wkt(serde_json::json!({"type": "Point", "coordinates": [2.3522, 48.8566]})).unwrap();
        assert_eq!(point, ("POINT (2.3522 48.8566)".into(), Some((2.3522, 48.8566))));
        let line = wkt(serde_json::json!({"type": "LineString", "coordinates": [[2, 48], [3, 49.5]]})).unwrap();
        assert_eq!(line, ("LINESTRING (2 48, 3 49.5)".into(), Some((2.5, 48.75))));
        let polygon = serde_json::json!({"type": "Polygon", "coordinates": [
            [[2, 48], [4, 48], [4, 50], [2, 50], [2, 48]],
            [[2.5, 48.5], [3, 48.5], [3, 49], [2.5, 48.5]]
        ]});
        assert_eq!(
            wkt(polygon).unwrap(),
            ("POLYGON ((2 48, 4 48, 4 50, 2 50, 2 48), (2.5 48.5, 3 48.5, 3 49, 2.5 48.5))".into(), Some((3.0, 49.0)))
        );
        let multipoint = wkt(serde_json::json!({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4, 5]]})).unwrap();
        assert_eq!(multipoint.0, "MULTIPOINT ((1 2), (3 4 5))");
        let multipolygon = serde_json::json!({"type": "MultiPolygon", "coordinates": [
            [[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[5, 5], [6, 5], [6, 6], [5, 5]]]
        ]});
        assert_eq!(
            wkt(multipolygon).unwrap(),
            ("MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5)))".into(), Some((3.0, 3.0)))
        );
        let collection = serde_json::json!({"type": "GeometryCollection", "geometries": [
            {"type": "Point", "coordinates": [1, 1]}, {"type": "LineString", "coordinates": [[0, 0], [2, 2]]}
        ]});
        assert_eq!(wkt(collection).unwrap().0, "GEOMETRYCOLLECTION (POINT (1 1), LINESTRING (0 0, 2 2))");
        assert_eq!(
            wkt(serde_json::json!({"type": "MultiLineString", "coordinates": []})).unwrap().0,
            "MULTILINESTRING EMPTY"
        );
    }

    #[test]
    fn invalid_or_projected_geometries_are_refused_with_the_reason() {
        let refused = |g: Value| wkt(g).unwrap_err();
        // Lambert-93 coordinates of Paris.
        let lambert = refused(serde_json::json!({"type": "Point", "coordinates": [652_469.0, 6_862_035.0]}));
        assert!(lambert.contains("outside WGS 84"), "{lambert}");
        assert!(
            refused(serde_json::json!({"type": "Circle", "coordinates": [0, 0]})).contains("unknown geometry type")
        );
        assert!(
            refused(serde_json::json!({"type": "Polygon", "coordinates": [[0, 0], [1, 1]]}))
                .contains("not [longitude, latitude]")
        );
        assert!(refused(serde_json::json!({"type": "Point", "coordinates": ["2", "48"]})).contains("not a number"));
        assert!(refused(serde_json::json!({"coordinates": [0, 0]})).contains("without `type`"));
        assert!(is_wgs84("urn:ogc:def:crs:OGC:1.3:CRS84") && is_wgs84("urn:ogc:def:crs:EPSG::4326"));
        assert!(!is_wgs84("urn:ogc:def:crs:EPSG::2154"));
    }
}
