//! Privacy functions for transforms, registered once per DataFusion session by [`register`]:
//!
//! | function | result |
//! |---|---|
//! | `pseudonymize(value, 'domain' [, 'trim'\|'casefold'\|'digits'])` | hex HMAC-SHA-256 under the domain's key, the same as at landing (same normalization gives the same pseudonym) |
//! | `pseudonym_key_id('domain')` | the id of the key `pseudonymize` uses for the domain (store it beside the pseudonym) |
//! | `geo_cell(lat, lon, meters)` | the id of the square cell of the INSEE / Eurostat grid (ETRS89-LAEA, EPSG:3035) holding the point: `CRS3035RES200mN2029800E4252400` (lower-left corner) |
//! | `age_band(age, width)` | `30-39` for width 10; ages of 90 and over are `90+`; null for null or negative ages |
//! | `time_bucket(ts, 'hour'\|'day'\|'week'\|'month')` | the start of the local hour / day / week (Monday) / month holding `ts`, in the project's time zone, as a UTC timestamp |
//! | `local_time(ts)` | the wall-clock time of `ts` in the project's time zone (a timestamp without time zone), for `date_part('hour', …)` and the like; not a privacy function |
//!
//! All are null on null input. A domain that is not a string literal, an unknown domain or unit, and a
//! non-positive cell size or band width are planning errors, so `lakehouse validate` reports them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringBuilder, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone as _, Timelike};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::{KeyRing, Pseudonymizer};
use crate::manifest::{Normalize, PhoneCountry};
use crate::storage::timestamp_type;

/// Which privacy functions a session gets.
#[derive(Debug, Clone)]
pub enum Functions {
    /// Model runs and reproduction: `pseudonymize` computes with these keys.
    Keyed(Arc<KeyRing>),
    /// Planning without data (`validate`): the keyed functions type-check but hold no key.
    Planning,
    /// Analysts' sessions (`lakehouse sql`): the keyed functions are refused with a clear planning error.
    Interactive,
}

/// Registers the privacy functions. `domains` are the project's pseudonymization domains (checked at planning).
/// The keyed functions compute only with [`Functions::Keyed`]; [`Functions::Planning`] type-checks them without
/// keys, and [`Functions::Interactive`] refuses them at planning.
pub fn register(
    ctx: &SessionContext,
    functions: Functions,
    domains: &[String],
    tz: chrono_tz::Tz,
    phone_country: Option<PhoneCountry>,
) {
    let (keys, interactive) = match functions {
        Functions::Keyed(keys) => (keys, false),
        Functions::Planning => (Arc::new(KeyRing::not_loaded()), false),
        Functions::Interactive => (Arc::new(KeyRing::not_loaded()), true),
    };
    let keyed = Keyed { keys, domains: domains.to_vec(), interactive, phone_country };
    ctx.register_udf(ScalarUDF::from(Pseudonymize { keyed: keyed.clone(), sig: user_defined() }));
    ctx.register_udf(ScalarUDF::from(PseudonymKeyId { keyed, sig: user_defined() }));
    ctx.register_udf(ScalarUDF::from(GeoCell { sig: user_defined() }));
    ctx.register_udf(ScalarUDF::from(AgeBand { sig: user_defined() }));
    ctx.register_udf(ScalarUDF::from(TimeBucket { tz, sig: user_defined() }));
    ctx.register_udf(ScalarUDF::from(LocalTime { tz, sig: user_defined() }));
}

fn user_defined() -> Signature {
    Signature::user_defined(Volatility::Immutable)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

/// The string literal at `i`, or a planning error naming the function and argument.
fn literal<'a>(args: &'a ReturnFieldArgs<'_>, i: usize, function: &str, what: &str) -> Result<&'a str> {
    match args.scalar_arguments.get(i).copied().flatten() {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => Ok(s),
        _ => plan_err!("{function}: the {what} (argument {}) must be a string literal such as 'police'", i + 1),
    }
}

fn scalar_str(v: &ColumnarValue) -> Option<&str> {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
        ) => Some(s),
        _ => None,
    }
}

/// Iterates a string array of any string type.
fn for_each_str(array: &ArrayRef, mut f: impl FnMut(Option<&str>)) {
    match array.data_type() {
        DataType::Utf8View => array.as_string_view().iter().for_each(&mut f),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(&mut f),
        _ => array.as_string::<i32>().iter().for_each(&mut f),
    }
}

macro_rules! impl_eq_by_name {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.name() == other.name()
            }
        }
        impl Eq for $t {}
        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.name().hash(state)
            }
        }
    };
}

/// What the keyed functions share: the keys, the declared domains, and whether the session is interactive.
#[derive(Debug, Clone)]
struct Keyed {
    keys: Arc<KeyRing>,
    domains: Vec<String>,
    interactive: bool,
    /// For `pseudonymize(…, 'phone')`.
    phone_country: Option<PhoneCountry>,
}

impl Keyed {
    /// Refuses a keyed function in an interactive session (checked before its arguments).
    fn available(&self, function: &str) -> Result<()> {
        if self.interactive {
            return plan_err!(
                "{function} is not available in interactive SQL: pseudonyms are computed only where they are \
                 written (ingest and models), so that a query cannot look a person up by a known identifier"
            );
        }
        Ok(())
    }

    fn key(&self, domain: &str) -> Result<&super::Key> {
        self.keys.get(domain).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

#[derive(Debug)]
struct Pseudonymize {
    keyed: Keyed,
    sig: Signature,
}
impl_eq_by_name!(Pseudonymize);

fn parse_normalize(s: &str) -> Option<Normalize> {
    match s {
        "trim" => Some(Normalize::Trim),
        "casefold" => Some(Normalize::Casefold),
        "digits" => Some(Normalize::Digits),
        "phone" => Some(Normalize::Phone),
        "email" => Some(Normalize::Email),
        _ => None,
    }
}

fn check_domain(function: &str, domain: &str, domains: &[String]) -> Result<()> {
    if domains.iter().any(|d| d == domain) {
        Ok(())
    } else {
        plan_err!("{function}: unknown domain '{domain}'; the project declares {}", domains.join(", "))
    }
}

impl ScalarUDFImpl for Pseudonymize {
    fn name(&self) -> &str {
        "pseudonymize"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(2..=3).contains(&arg_types.len()) {
            return plan_err!(
                "pseudonymize(value, 'domain' [, 'trim'|'casefold'|'digits'|'phone'|'email']) takes 2 or 3 arguments"
            );
        }
        Ok(arg_types.iter().map(|t| if is_string(t) { t.clone() } else { DataType::Utf8 }).collect())
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.keyed.available("pseudonymize")?;
        check_domain("pseudonymize", literal(&args, 1, "pseudonymize", "domain")?, &self.keyed.domains)?;
        if args.arg_fields.len() == 3 {
            let n = literal(&args, 2, "pseudonymize", "normalization")?;
            if parse_normalize(n).is_none() {
                return plan_err!(
                    "pseudonymize: unknown normalization '{n}'; use 'trim', 'casefold', 'digits', 'phone' or 'email'"
                );
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let domain = scalar_str(&args.args[1]).unwrap_or_default();
        let normalize = args.args.get(2).and_then(scalar_str).and_then(parse_normalize).unwrap_or_default();
        let key = self.keyed.key(domain)?;
        let mut p = Pseudonymizer::new(key, normalize, self.keyed.phone_country);
        let values = args.args[0].to_array(args.number_rows)?;
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 64);
        let mut hex = String::with_capacity(64);
        for_each_str(&values, |v| match v {
            Some(v) if p.pseudonym_into(v, &mut hex) => out.append_value(&hex),
            _ => out.append_null(),
        });
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[derive(Debug)]
struct PseudonymKeyId {
    keyed: Keyed,
    sig: Signature,
}
impl_eq_by_name!(PseudonymKeyId);

impl ScalarUDFImpl for PseudonymKeyId {
    fn name(&self) -> &str {
        "pseudonym_key_id"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 1 {
            return plan_err!("pseudonym_key_id('domain') takes 1 argument");
        }
        Ok(vec![DataType::Utf8])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.keyed.available("pseudonym_key_id")?;
        check_domain("pseudonym_key_id", literal(&args, 0, "pseudonym_key_id", "domain")?, &self.keyed.domains)?;
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, false)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let domain = scalar_str(&args.args[0]).unwrap_or_default();
        let key = self.keyed.key(domain)?;
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(key.id.clone()))))
    }
}

#[derive(Debug)]
struct GeoCell {
    sig: Signature,
}
impl_eq_by_name!(GeoCell);

impl ScalarUDFImpl for GeoCell {
    fn name(&self) -> &str {
        "geo_cell"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 3 {
            return plan_err!("geo_cell(lat, lon, meters) takes 3 arguments");
        }
        Ok(vec![DataType::Float64, DataType::Float64, DataType::Int64])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let size = |v: &ScalarValue| match v.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(m))) => m,
            _ => 0,
        };
        if let Some(Some(v)) = args.scalar_arguments.get(2)
            && size(v) <= 0
        {
            return plan_err!("geo_cell: the cell size must be a positive number of meters, such as 200 or 1000");
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (lat, lon, size): (&Float64Array, &Float64Array, &Int64Array) =
            (arrays[0].as_primitive(), arrays[1].as_primitive(), arrays[2].as_primitive());
        let mut out = StringBuilder::with_capacity(lat.len(), lat.len() * 32);
        for i in 0..lat.len() {
            if lat.is_null(i) || lon.is_null(i) || size.is_null(i) || size.value(i) <= 0 {
                out.append_null();
            } else {
                out.append_value(grid_cell_id(lat.value(i), lon.value(i), size.value(i)));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// ETRS89 / LAEA Europe (EPSG:3035) forward projection, ellipsoidal (IOGP Guidance Note 7-2, method 9820).
/// Returns (easting, northing) in meters.
pub fn laea_europe(lat_deg: f64, lon_deg: f64) -> (f64, f64) {
    const A: f64 = 6_378_137.0;
    const INV_F: f64 = 298.257_222_101;
    const LAT0: f64 = 52.0;
    const LON0: f64 = 10.0;
    const FE: f64 = 4_321_000.0;
    const FN: f64 = 3_210_000.0;
    let f = 1.0 / INV_F;
    let e2 = 2.0 * f - f * f;
    let e = e2.sqrt();
    let q = |phi: f64| {
        let s = phi.sin();
        (1.0 - e2) * (s / (1.0 - e2 * s * s) - (1.0 / (2.0 * e)) * ((1.0 - e * s) / (1.0 + e * s)).ln())
    };
    let qp = q(std::f64::consts::FRAC_PI_2);
    let (phi, phi0) = (lat_deg.to_radians(), LAT0.to_radians());
    let dl = (lon_deg - LON0).to_radians();
    let beta = (q(phi) / qp).asin();
    let beta0 = (q(phi0) / qp).asin();
    let rq = A * (qp / 2.0).sqrt();
    let d = A * (phi0.cos() / (1.0 - e2 * phi0.sin().powi(2)).sqrt()) / (rq * beta0.cos());
    let b = rq * (2.0 / (1.0 + beta0.sin() * beta.sin() + beta0.cos() * beta.cos() * dl.cos())).sqrt();
    let east = FE + b * d * beta.cos() * dl.sin();
    let north = FN + (b / d) * (beta0.cos() * beta.sin() - beta0.sin() * beta.cos() * dl.cos());
    (east, north)
}

/// The INSEE / Eurostat grid cell id of a point: `CRS3035RES{size}mN{north}E{east}`, lower-left corner.
pub fn grid_cell_id(lat: f64, lon: f64, size: i64) -> String {
    let (e, n) = laea_europe(lat, lon);
    let s = size as f64;
    let (e, n) = ((e / s).floor() as i64 * size, (n / s).floor() as i64 * size);
    format!("CRS3035RES{size}mN{n}E{e}")
}

#[derive(Debug)]
struct AgeBand {
    sig: Signature,
}
impl_eq_by_name!(AgeBand);

/// Ages from this one are published as one open band.
const TOP_AGE: i64 = 90;

pub fn age_band(age: i64, width: i64) -> Option<String> {
    if age < 0 || width <= 0 {
        return None;
    }
    if age >= TOP_AGE {
        return Some(format!("{TOP_AGE}+"));
    }
    let lo = age / width * width;
    Some(format!("{lo}-{}", (lo + width - 1).min(TOP_AGE - 1)))
}

impl ScalarUDFImpl for AgeBand {
    fn name(&self) -> &str {
        "age_band"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!("age_band(age, width) takes 2 arguments");
        }
        Ok(vec![DataType::Int64, DataType::Int64])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (age, width): (&Int64Array, &Int64Array) = (arrays[0].as_primitive(), arrays[1].as_primitive());
        let mut out = StringBuilder::with_capacity(age.len(), age.len() * 5);
        for i in 0..age.len() {
            let band = (age.is_valid(i) && width.is_valid(i)).then(|| age_band(age.value(i), width.value(i))).flatten();
            out.append_option(band);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[derive(Debug)]
struct TimeBucket {
    tz: chrono_tz::Tz,
    sig: Signature,
}
impl_eq_by_name!(TimeBucket);

pub use crate::manifest::Bucket;

/// The start (UTC microseconds) of the local bucket holding `micros`.
pub fn time_bucket(micros: i64, bucket: Bucket, tz: chrono_tz::Tz) -> Option<i64> {
    let local = DateTime::from_timestamp_micros(micros)?.with_timezone(&tz).naive_local();
    let start: NaiveDateTime = match bucket {
        // Subtract the minutes and seconds of the local time: right across both DST changes (the repeated hour
        // of October is two buckets) for time zones whose offsets are whole hours, like every European one.
        Bucket::Hour => {
            let into_hour = i64::from(local.minute()) * 60_000_000
                + i64::from(local.second()) * 1_000_000
                + i64::from(local.nanosecond() / 1000);
            return Some(micros - into_hour);
        }
        Bucket::Day => local.date().and_hms_opt(0, 0, 0)?,
        Bucket::Week => (local.date() - chrono::Days::new(u64::from(local.weekday().num_days_from_monday())))
            .and_hms_opt(0, 0, 0)?,
        Bucket::Month => local.date().with_day(1)?.and_hms_opt(0, 0, 0)?,
    };
    // Local midnight is neither repeated nor skipped in European time zones; take the first if it were.
    let utc = tz.from_local_datetime(&start).earliest().map_or(micros, |t| t.timestamp_micros());
    Some(utc)
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!("time_bucket(ts, 'hour'|'day'|'week'|'month') takes 2 arguments");
        }
        Ok(vec![timestamp_type(), DataType::Utf8])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(timestamp_type())
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let unit = literal(&args, 1, "time_bucket", "unit")?;
        if Bucket::parse(unit).is_none() {
            return plan_err!("time_bucket: unknown unit '{unit}'; use 'hour', 'day', 'week' or 'month'");
        }
        Ok(Arc::new(Field::new(self.name(), timestamp_type(), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bucket = scalar_str(&args.args[1]).and_then(Bucket::parse).unwrap_or(Bucket::Hour);
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts: &TimestampMicrosecondArray = ts.as_primitive();
        let out: TimestampMicrosecondArray =
            ts.iter().map(|v| v.and_then(|v| time_bucket(v, bucket, self.tz))).collect::<TimestampMicrosecondArray>();
        Ok(ColumnarValue::Array(Arc::new(out.with_timezone("UTC"))))
    }
}

#[derive(Debug)]
struct LocalTime {
    tz: chrono_tz::Tz,
    sig: Signature,
}
impl_eq_by_name!(LocalTime);

impl ScalarUDFImpl for LocalTime {
    fn name(&self) -> &str {
        "local_time"
    }
    fn signature(&self) -> &Signature {
        &self.sig
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 1 {
            return plan_err!("local_time(ts) takes 1 argument");
        }
        Ok(vec![timestamp_type()])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts: &TimestampMicrosecondArray = ts.as_primitive();
        let out: TimestampMicrosecondArray = ts
            .iter()
            .map(|v| {
                v.and_then(DateTime::from_timestamp_micros)
                    .map(|t| t.with_timezone(&self.tz).naive_local().and_utc().timestamp_micros())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IOGP Guidance Note 7-2, example for method 9820 (ETRS89 / LAEA Europe): 50°N 5°E.
    #[test]
    fn laea_matches_the_iogp_example() {
        let (e, n) = laea_europe(50.0, 5.0);
        assert!((e - 3_962_799.45).abs() < 0.01, "easting {e}");
        assert!((n - 2_999_718.85).abs() < 0.01, "northing {n}");
    }

    #[test]
    fn grid_cells_floor_to_the_lower_left_corner() {
        assert_eq!(grid_cell_id(50.0, 5.0, 1000), "CRS3035RES1000mN2999000E3962000");
        assert_eq!(grid_cell_id(50.0, 5.0, 200), "CRS3035RES200mN2999600E3962600");
    }

    #[test]
    fn age_bands() {
        assert_eq!(age_band(37, 10).as_deref(), Some("30-39"));
        assert_eq!(age_band(0, 5).as_deref(), Some("0-4"));
        assert_eq!(age_band(89, 10).as_deref(), Some("80-89"));
        assert_eq!(age_band(90, 10).as_deref(), Some("90+"));
        assert_eq!(age_band(88, 7).as_deref(), Some("84-89"));
        assert_eq!(age_band(-1, 10), None);
        assert_eq!(age_band(30, 0), None);
    }

    /// `pseudonymize` in SQL is HMAC-SHA-256 of the normalized value under the domain's key (checked against
    /// the `hmac` crate), null for null and blank values; `pseudonym_key_id` names the key.
    #[tokio::test]
    async fn pseudonymize_in_sql_is_keyed_hmac_sha256() {
        use hmac::{Hmac, Mac};
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let ring = KeyRing::parse(&format!("police k7 {key}"), "test").unwrap();
        let ctx = SessionContext::new();
        register(&ctx, Functions::Keyed(Arc::new(ring)), &["police".to_string()], chrono_tz::UTC, None);
        let sql = "SELECT pseudonymize(' Dupont ', 'police', 'casefold') AS a, pseudonymize('06 12', 'police', 'digits') AS b, \
                   pseudonymize(CAST(NULL AS VARCHAR), 'police') AS c, pseudonymize('  ', 'police') AS d, pseudonym_key_id('police') AS e";
        let batches = crate::session::sql(&ctx, sql).await.unwrap().collect().await.unwrap();
        let col = |i: usize| {
            let c = arrow::compute::cast(batches[0].column(i), &DataType::Utf8).unwrap();
            let s = c.as_string::<i32>();
            s.is_valid(0).then(|| s.value(0).to_string())
        };
        let expect = |msg: &str| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&hex::decode(key).unwrap()).unwrap();
            mac.update(msg.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(col(0), Some(expect("dupont")));
        assert_eq!(col(1), Some(expect("0612")));
        assert_eq!(col(2), None);
        assert_eq!(col(3), None);
        assert_eq!(col(4), Some(format!("k7:{}", &expect("lakehouse key fingerprint")[..12])));
        // An unknown domain is a planning error.
        let err = crate::session::sql(&ctx, "SELECT pseudonymize('x', 'fire')").await.unwrap_err().to_string();
        assert!(err.contains("unknown domain 'fire'"), "{err}");
    }

    fn micros(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn time_buckets_follow_local_time_across_dst() {
        let tz = chrono_tz::Europe::Paris;
        // 2026-03-29: clocks go 02:00 → 03:00 local (01:00 UTC). 01:30 UTC is 03:30 CEST.
        assert_eq!(time_bucket(micros("2026-03-29T01:30:00Z"), Bucket::Hour, tz), Some(micros("2026-03-29T01:00:00Z")));
        assert_eq!(time_bucket(micros("2026-03-29T01:30:00Z"), Bucket::Day, tz), Some(micros("2026-03-28T23:00:00Z")));
        // 2026-10-25: 03:00 CEST → 02:00 CET; 00:30 and 01:30 UTC are both 02:30 local, in different hours.
        assert_eq!(time_bucket(micros("2026-10-25T00:30:00Z"), Bucket::Hour, tz), Some(micros("2026-10-25T00:00:00Z")));
        assert_eq!(time_bucket(micros("2026-10-25T01:30:00Z"), Bucket::Hour, tz), Some(micros("2026-10-25T01:00:00Z")));
        assert_eq!(time_bucket(micros("2026-10-25T12:00:00Z"), Bucket::Day, tz), Some(micros("2026-10-24T22:00:00Z")));
        // Week starts on Monday, month on the 1st, local midnight.
        assert_eq!(time_bucket(micros("2026-11-28T10:00:00Z"), Bucket::Week, tz), Some(micros("2026-11-22T23:00:00Z")));
        assert_eq!(
            time_bucket(micros("2026-11-28T10:00:00Z"), Bucket::Month, tz),
            Some(micros("2026-10-31T23:00:00Z"))
        );
    }
}
