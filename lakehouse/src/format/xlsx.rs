//! Excel workbooks (`.xlsx`, Office Open XML): one sheet, a header row naming the columns, one record per row
//! below it.
//!
//! The workbook is a ZIP archive of XML parts, read here without holding the sheet in memory: the central
//! directory locates the parts, each is inflated as it is parsed (within `limits.max_decompressed_bytes` and
//! `limits.max_ratio`, like a gzip file), and the sheet's rows are streamed one at a time. Only the shared
//! strings (the workbook's table of texts) are held, at most [`MAX_SHARED_STRINGS_BYTES`].
//!
//! Cells are read as Excel stores them and handed to the column's parser as text: numbers to the 15 significant
//! digits Excel keeps (`0.30000000000000004`, a formula's binary noise, is `0.3`), booleans as `true`/`false`,
//! texts (shared, inline or a formula's) as they are, and numbers whose cell format is a date or time as an ISO
//! 8601 local date-time (`2024-03-01T08:30:00`, or `2024-03-01` when it has no time), from the 1900 or 1904 date
//! system the workbook declares. A cell holding an Excel error (`#N/A`, `#DIV/0!`) quarantines its record. Rows
//! are located by their number in the sheet (the quarantine's
//! `line`); empty rows are skipped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use quick_xml::events::{BytesStart, Event};

use super::{ReadError, RowEmitter, RowError};
use crate::manifest::{ColumnType, ReadLimits, Sheet};

/// Most bytes of text the shared strings may hold (they are kept in memory while the sheet is read).
pub const MAX_SHARED_STRINGS_BYTES: u64 = 512 << 20;
/// Largest central directory read (a workbook's holds a few hundred bytes per part).
const MAX_DIRECTORY_BYTES: u64 = 16 << 20;
/// Most cells one row may hold (Excel's limit is 16,384 columns).
const MAX_ROW_CELLS: usize = 16_384;

fn malformed(detail: impl Into<String>) -> ReadError {
    ReadError::Malformed(format!("not a readable Excel workbook (.xlsx): {}", detail.into()))
}

/// One part of the archive.
struct Entry {
    method: u16,
    compressed: u64,
    offset: u64,
}

/// The parts of a ZIP archive, by name.
struct Archive {
    file: std::fs::File,
    entries: HashMap<String, Entry>,
    limits: ReadLimits,
}

impl Archive {
    fn open(mut file: std::fs::File, limits: ReadLimits) -> Result<Self, ReadError> {
        let len = file.metadata()?.len();
        // The end of central directory record: 22 bytes, then a comment of at most 65,535.
        let tail_len = len.min(22 + 65_535);
        file.seek(SeekFrom::Start(len - tail_len))?;
        let mut tail = vec![0; tail_len as usize];
        file.read_exact(&mut tail)?;
        let at = (0..tail.len().saturating_sub(21))
            .rev()
            .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
            .ok_or_else(|| malformed("it is not a ZIP archive (an .xls file? save it as .xlsx)"))?;
        let eocd = &tail[at..];
        let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let count = u16_at(eocd, 10);
        let (size, offset) = (u64::from(u32_at(eocd, 12)), u64::from(u32_at(eocd, 16)));
        if count == u16::MAX || size == u64::from(u32::MAX) || offset == u64::from(u32::MAX) {
            return Err(malformed("a ZIP64 archive (over 4 GiB or 65,535 parts) is not read"));
        }
        if size > MAX_DIRECTORY_BYTES || offset + size > len {
            return Err(malformed("its central directory is out of bounds"));
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut dir = vec![0; size as usize];
        file.read_exact(&mut dir)?;
        let mut entries = HashMap::new();
        let mut i = 0;
        while i + 46 <= dir.len() && u32_at(&dir, i) == 0x0201_4b50 {
            let method = u16_at(&dir, i + 10);
            let compressed = u64::from(u32_at(&dir, i + 20));
            let (n, e, c) =
                (u16_at(&dir, i + 28) as usize, u16_at(&dir, i + 30) as usize, u16_at(&dir, i + 32) as usize);
            let local = u64::from(u32_at(&dir, i + 42));
            let name = dir.get(i + 46..i + 46 + n).ok_or_else(|| malformed("a part's name is cut short"))?;
            let name = String::from_utf8_lossy(name).trim_start_matches('/').to_string();
            entries.insert(name, Entry { method, compressed, offset: local });
            i += 46 + n + e + c;
        }
        if entries.len() != usize::from(count) {
            return Err(malformed("its central directory does not list the parts it announces"));
        }
        Ok(Self { file, entries, limits })
    }

    /// A part's bytes, inflated as they are read; `None` when the archive has no such part.
    fn part(&self, name: &str) -> Result<Option<Box<dyn BufRead + '_>>, ReadError> {
        let Some(entry) = self.entries.get(name) else { return Ok(None) };
        let mut file = &self.file;
        file.seek(SeekFrom::Start(entry.offset))?;
        let mut header = [0u8; 30];
        file.read_exact(&mut header).map_err(|_| malformed(format!("part `{name}` is cut short")))?;
        if header[..4] != [0x50, 0x4b, 0x03, 0x04] {
            return Err(malformed(format!("part `{name}` is not where the directory says")));
        }
        let skip = u64::from(u16::from_le_bytes([header[26], header[27]]))
            + u64::from(u16::from_le_bytes([header[28], header[29]]));
        file.seek(SeekFrom::Current(skip as i64))?;
        let raw = file.take(entry.compressed);
        Ok(Some(match entry.method {
            0 => Box::new(BufReader::new(raw)),
            8 => Box::new(BufReader::with_capacity(
                1 << 16,
                super::limits::Decompressed::new(raw, self.limits, flate2::bufread::DeflateDecoder::new),
            )),
            m => return Err(malformed(format!("part `{name}` is compressed with method {m} (not deflate)"))),
        }))
    }

    fn required(&self, name: &str) -> Result<Box<dyn BufRead + '_>, ReadError> {
        self.part(name)?.ok_or_else(|| malformed(format!("it has no `{name}`")))
    }
}

/// A part's XML cannot be read: a limit passed while inflating it, an I/O error, or XML that is not well-formed.
fn xml_error(part: &str, e: quick_xml::Error) -> ReadError {
    match e {
        quick_xml::Error::Io(io) => match super::limits::LimitExceeded::find(&io) {
            Some(message) => ReadError::Limit(message),
            None => ReadError::Io(std::io::Error::new(io.kind(), io.to_string())),
        },
        other => bad_xml(part, other),
    }
}

fn bad_xml(part: &str, e: impl std::fmt::Display) -> ReadError {
    malformed(format!("`{part}` is not well-formed XML: {e}"))
}

/// Parses a part, handing each XML event to `on` until the end.
fn each_event(
    input: impl BufRead,
    part: &str,
    mut on: impl FnMut(&Event<'_>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| xml_error(part, e))? {
            Event::Eof => return Ok(()),
            event => on(&event)?,
        }
        buf.clear();
    }
}

/// An attribute's value, unescaped.
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(Cow::into_owned))
}

/// Appends a text event or an entity reference to `out`.
fn push_text(out: &mut String, event: &Event<'_>, part: &str) -> Result<(), ReadError> {
    match event {
        Event::Text(t) => out.push_str(&t.xml_content().map_err(|e| bad_xml(part, e))?),
        Event::CData(t) => out.push_str(&t.decode().map_err(|e| bad_xml(part, e))?),
        Event::GeneralRef(r) => {
            if let Some(c) = r.resolve_char_ref().map_err(|e| bad_xml(part, e))? {
                out.push(c);
            } else {
                out.push_str(match r.decode().map_err(|e| bad_xml(part, e))?.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    other => return Err(bad_xml(part, format!("unknown entity `&{other};`"))),
                });
            }
        }
        _ => {}
    }
    Ok(())
}

/// The sheets in workbook order (name, part), and whether dates count from 1904.
fn sheets(archive: &Archive) -> Result<(Vec<(String, String)>, bool), ReadError> {
    let part = "xl/workbook.xml";
    let mut sheets = Vec::new();
    let mut date1904 = false;
    each_event(archive.required(part)?, part, |event| {
        if let Event::Start(e) | Event::Empty(e) = event {
            match e.local_name().as_ref() {
                b"sheet" => sheets.push((attr(e, b"name").unwrap_or_default(), attr(e, b"id").unwrap_or_default())),
                b"workbookPr" => date1904 = matches!(attr(e, b"date1904").as_deref(), Some("1" | "true")),
                _ => {}
            }
        }
        Ok(())
    })?;
    // The relationships give each sheet's part.
    let rels_part = "xl/_rels/workbook.xml.rels";
    let mut targets = HashMap::new();
    each_event(archive.required(rels_part)?, rels_part, |event| {
        if let Event::Start(e) | Event::Empty(e) = event
            && e.local_name().as_ref() == b"Relationship"
            && let (Some(id), Some(target)) = (attr(e, b"Id"), attr(e, b"Target"))
        {
            let path = match target.strip_prefix('/') {
                Some(absolute) => absolute.to_string(),
                None => format!("xl/{target}"),
            };
            targets.insert(id, path);
        }
        Ok(())
    })?;
    let sheets = sheets.into_iter().filter_map(|(name, id)| targets.get(&id).map(|t| (name, t.clone()))).collect();
    Ok((sheets, date1904))
}

/// The shared strings, in order.
fn shared_strings(archive: &Archive) -> Result<Vec<String>, ReadError> {
    let part = "xl/sharedStrings.xml";
    let Some(input) = archive.part(part)? else { return Ok(Vec::new()) };
    let mut strings = Vec::new();
    let mut total = 0u64;
    let (mut current, mut in_t, mut skip) = (String::new(), false, 0u32);
    each_event(input, part, |event| {
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                b"si" => current.clear(),
                // Phonetic guides (`rPh`) are not part of the text.
                b"rPh" => skip += 1,
                b"t" => in_t = true,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"si" => {
                    total += current.len() as u64;
                    if total > MAX_SHARED_STRINGS_BYTES {
                        return Err(ReadError::Limit(format!(
                            "the workbook's shared strings hold more than {} MiB of text",
                            MAX_SHARED_STRINGS_BYTES >> 20
                        )));
                    }
                    strings.push(std::mem::take(&mut current));
                }
                b"rPh" => skip = skip.saturating_sub(1),
                b"t" => in_t = false,
                _ => {}
            },
            Event::Empty(e) if e.local_name().as_ref() == b"si" => strings.push(String::new()),
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) if in_t && skip == 0 => {
                push_text(&mut current, event, part)?
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(strings)
}

/// Which cell formats (`s` attribute: an index into `cellXfs`) show a date or a time.
fn date_styles(archive: &Archive) -> Result<Vec<bool>, ReadError> {
    let part = "xl/styles.xml";
    let Some(input) = archive.part(part)? else { return Ok(Vec::new()) };
    let mut custom: HashMap<u32, bool> = HashMap::new();
    let mut styles = Vec::new();
    let mut in_xfs = false;
    each_event(input, part, |event| {
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"numFmt" => {
                    if let (Some(id), Some(code)) = (attr(e, b"numFmtId"), attr(e, b"formatCode"))
                        && let Ok(id) = id.parse()
                    {
                        custom.insert(id, is_date_format(&code));
                    }
                }
                b"cellXfs" => in_xfs = true,
                b"xf" if in_xfs => {
                    let id: u32 = attr(e, b"numFmtId").and_then(|v| v.parse().ok()).unwrap_or(0);
                    styles.push(custom.get(&id).copied().unwrap_or_else(|| builtin_date(id)));
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == b"cellXfs" => in_xfs = false,
            _ => {}
        }
        Ok(())
    })?;
    Ok(styles)
}

/// Excel's built-in number formats that show dates or times (ECMA-376 §18.8.30, and the East Asian ones).
fn builtin_date(id: u32) -> bool {
    matches!(id, 14..=22 | 27..=36 | 45..=47 | 50..=58)
}

/// Whether a custom number format shows a date or a time: a `d`, `m`, `y`, `h` or `s` outside quoted text,
/// escapes and brackets (`[Red]`; `[h]` counts), in the first section.
fn is_date_format(code: &str) -> bool {
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for q in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                }
            }
            '\\' | '_' | '*' => {
                chars.next();
            }
            '[' => {
                let inside: String = chars.by_ref().take_while(|&b| b != ']').collect();
                let lower = inside.to_ascii_lowercase();
                if !lower.is_empty() && lower.chars().all(|c| matches!(c, 'h' | 'm' | 's')) {
                    return true;
                }
            }
            ';' => return false,
            'd' | 'D' | 'm' | 'M' | 'y' | 'Y' | 'h' | 'H' | 's' | 'S' => return true,
            _ => {}
        }
    }
    false
}

/// An Excel serial date-time as ISO 8601 local time: `2024-03-01` at midnight unless `with_time`, else with its
/// time, to the millisecond.
fn serial_to_iso(serial: f64, date1904: bool, with_time: bool) -> Option<String> {
    if !(0.0..=2_958_465.0).contains(&serial) {
        return None;
    }
    let epoch = if date1904 {
        chrono::NaiveDate::from_ymd_opt(1904, 1, 1)?
    } else if serial < 61.0 {
        // The 1900 system counts a 29 February 1900 that did not exist (serial 60): before it, days are one
        // later than from 30 December 1899.
        chrono::NaiveDate::from_ymd_opt(1899, 12, 31)?
    } else {
        chrono::NaiveDate::from_ymd_opt(1899, 12, 30)?
    };
    let millis = (serial * 86_400_000.0).round() as i64;
    let at = epoch.and_hms_opt(0, 0, 0)? + chrono::Duration::milliseconds(millis);
    Some(if millis % 86_400_000 == 0 && !with_time {
        at.format("%Y-%m-%d").to_string()
    } else if millis % 1000 == 0 {
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    })
}

/// A number as Excel shows it at most precisely: 15 significant digits, in plain decimal notation
/// (`0.30000000000000004`, a sum's binary noise, is `0.3`; `1.2E1` is `12`).
fn excel_number(text: &str) -> Option<String> {
    let n: f64 = text.parse().ok().filter(|n: &f64| n.is_finite())?;
    if n == 0.0 {
        return Some("0".into());
    }
    let scientific = format!("{n:.14e}");
    let (mantissa, exponent) = scientific.split_once('e')?;
    let exponent: i64 = exponent.parse().ok()?;
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    // The value is 0.<digits> × 10^point.
    let point = exponent + 1;
    let mut out = String::from(if n < 0.0 { "-" } else { "" });
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(digits);
    } else if point as usize >= digits.len() {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        let (int, frac) = digits.split_at(point as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

/// A cell's column (from 0) from its reference (`C7` → 2).
fn column_of(reference: &str) -> Option<usize> {
    let letters = reference.bytes().take_while(u8::is_ascii_alphabetic);
    let mut n = 0usize;
    let mut any = false;
    for b in letters {
        n = n.checked_mul(26)?.checked_add(usize::from(b.to_ascii_uppercase() - b'A') + 1)?;
        any = true;
    }
    (any && n <= MAX_ROW_CELLS).then(|| n - 1)
}

/// A cell as read: its text for the column's parser, a date-time (a number formatted as a date: its serial), or
/// an Excel error.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Date(f64),
    Error(String),
}

/// What the sheet's reader needs of the workbook.
struct Book {
    strings: Vec<String>,
    dates: Vec<bool>,
    date1904: bool,
}

impl Book {
    /// The cell of type `t` and style `s` whose `<v>` (or inline text) is `value`.
    fn cell(&self, t: Option<&str>, s: Option<usize>, value: String, part: &str) -> Result<Cell, ReadError> {
        Ok(match t.unwrap_or("n") {
            "s" => {
                let i: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| malformed(format!("`{part}`: a shared string index is not a number")))?;
                let text = self.strings.get(i).ok_or_else(|| {
                    malformed(format!(
                        "`{part}`: shared string {i} does not exist ({} in the workbook)",
                        self.strings.len()
                    ))
                })?;
                Cell::Text(text.clone())
            }
            "b" => Cell::Text(if value.trim() == "1" { "true" } else { "false" }.into()),
            "e" => Cell::Error(value),
            "n" => {
                let is_date = s.and_then(|s| self.dates.get(s)).copied().unwrap_or(false);
                let number = value.trim();
                match number.parse::<f64>() {
                    Ok(serial) if is_date && serial_to_iso(serial, self.date1904, false).is_some() => {
                        Cell::Date(serial)
                    }
                    Ok(_) => Cell::Text(excel_number(number).unwrap_or_else(|| number.into())),
                    Err(_) => Cell::Text(number.into()),
                }
            }
            // `str` (a formula's text), `inlineStr`, `d` (an ISO date).
            _ => Cell::Text(value),
        })
    }
}

/// Reads the sheet `sheet` (the first one by default): the names in row `header_row`, then one record per
/// non-empty row below it.
pub fn read(
    file: std::fs::File,
    sheet: Option<&Sheet>,
    header_row: u32,
    limits: ReadLimits,
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    if file.metadata()?.len() == 0 {
        return Ok(());
    }
    let archive = Archive::open(file, limits)?;
    let (sheets, date1904) = sheets(&archive)?;
    let listed = || sheets.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let (name, part) = match sheet {
        None => sheets.first().cloned().ok_or_else(|| malformed("it has no sheet"))?,
        Some(Sheet::Name(wanted)) => sheets.iter().find(|(n, _)| n == wanted).cloned().ok_or_else(|| {
            ReadError::Malformed(format!(
                "the workbook has no sheet `{wanted}` (its sheets: {}): check format.sheet",
                listed()
            ))
        })?,
        Some(Sheet::Index(i)) => sheets.get((*i as usize).wrapping_sub(1)).cloned().ok_or_else(|| {
            ReadError::Malformed(format!(
                "the workbook has {} sheet(s), no sheet {i} (its sheets: {}): check format.sheet",
                sheets.len(),
                listed()
            ))
        })?,
    };
    let book = Book { strings: shared_strings(&archive)?, dates: date_styles(&archive)?, date1904 };
    let mut header: Option<(Vec<usize>, Vec<String>)> = None;
    let mut cells: Vec<Option<Cell>> = Vec::new();
    let mut row_number: u64 = 0;
    let mut cell: Option<(usize, Option<String>, Option<usize>)> = None;
    let mut value = String::new();
    let mut in_value = false;
    each_event(archive.required(&part)?, &part, |event| {
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"row" => {
                    row_number = attr(e, b"r").and_then(|r| r.parse().ok()).unwrap_or(row_number + 1);
                    cells.clear();
                    if matches!(event, Event::Empty(_)) {
                        row_done(&mut header, &mut cells, row_number, (header_row, &name, date1904), rows)?;
                    }
                }
                b"c" => {
                    let column = match attr(e, b"r") {
                        Some(r) => column_of(&r).ok_or_else(|| malformed(format!("`{part}`: cell reference `{r}`")))?,
                        None => cells.len(),
                    };
                    if column >= MAX_ROW_CELLS {
                        return Err(malformed(format!(
                            "`{part}`: row {row_number} has more than {MAX_ROW_CELLS} cells"
                        )));
                    }
                    let style = attr(e, b"s").and_then(|s| s.parse().ok());
                    cell = Some((column, attr(e, b"t"), style));
                    value.clear();
                    if matches!(event, Event::Empty(_)) {
                        cell = None;
                    }
                }
                b"v" | b"t" if cell.is_some() => in_value = matches!(event, Event::Start(_)),
                _ => {}
            },
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) if in_value => push_text(&mut value, event, &part)?,
            Event::End(e) => match e.local_name().as_ref() {
                b"v" | b"t" => in_value = false,
                b"c" => {
                    if let Some((column, t, style)) = cell.take()
                        && !value.is_empty()
                    {
                        if cells.len() <= column {
                            cells.resize(column + 1, None);
                        }
                        cells[column] = Some(book.cell(t.as_deref(), style, std::mem::take(&mut value), &part)?);
                    }
                }
                b"row" => row_done(&mut header, &mut cells, row_number, (header_row, &name, date1904), rows)?,
                _ => {}
            },
            _ => {}
        }
        Ok(())
    })?;
    if header.is_none() {
        return Err(ReadError::Malformed(format!(
            "sheet `{name}` has no row {header_row} (format.header_row): no column names"
        )));
    }
    Ok(())
}

/// A row is read: the header's names, or a record offered to the emitter.
fn row_done(
    header: &mut Option<(Vec<usize>, Vec<String>)>,
    cells: &mut Vec<Option<Cell>>,
    number: u64,
    (header_row, sheet, date1904): (u32, &str, bool),
    rows: &mut RowEmitter<'_, '_>,
) -> Result<(), ReadError> {
    if number < u64::from(header_row) {
        return Ok(());
    }
    let Some((positions, names)) = header else {
        if number > u64::from(header_row) {
            return Err(ReadError::Malformed(format!(
                "sheet `{sheet}` has no row {header_row} (format.header_row): no column names"
            )));
        }
        let names: Vec<String> = cells
            .iter()
            .map(|c| match c {
                Some(Cell::Text(t)) => t.trim().to_string(),
                Some(Cell::Date(serial)) => serial_to_iso(*serial, date1904, false).unwrap_or_default(),
                _ => String::new(),
            })
            .collect();
        let matched = rows.match_fields(&names, &format!("the header row of sheet `{sheet}`"))?;
        if !matched.missing.is_empty() {
            return Err(ReadError::Malformed(format!(
                "the header row of sheet `{sheet}` (row {header_row}) lacks the declared column(s) {}",
                matched.missing.join(", ")
            )));
        }
        rows.note_new_fields(&matched.extra)?;
        *header = Some((matched.positions, names));
        return Ok(());
    };
    if cells.iter().all(Option::is_none) {
        return Ok(());
    }
    let raw = || {
        let obj: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .map(|(i, n)| {
                let v = match cells.get(i).cloned().flatten() {
                    Some(Cell::Text(t) | Cell::Error(t)) => serde_json::Value::String(t),
                    Some(Cell::Date(serial)) => {
                        serde_json::Value::String(serial_to_iso(serial, date1904, false).unwrap_or_default())
                    }
                    None => serde_json::Value::Null,
                };
                (n.clone(), v)
            })
            .collect();
        serde_json::to_vec(&obj).unwrap_or_default()
    };
    let plan = rows.plan().columns.iter().map(|c| (c.name.clone(), c.ty)).collect::<Vec<(String, ColumnType)>>();
    let cells_ref = &*cells;
    rows.row(
        |i| match cells_ref.get(positions[i]).and_then(Option::as_ref) {
            None => Ok(None),
            Some(Cell::Text(t)) => Ok(Some(Cow::Owned(t.clone()))),
            // A timestamp column always gets a time (midnight included), a number column the serial, others a
            // bare date at midnight.
            Some(Cell::Date(serial)) => Ok(match plan[i].1 {
                ColumnType::Int | ColumnType::Double | ColumnType::Decimal => excel_number(&serial.to_string()),
                ty => serial_to_iso(*serial, date1904, ty == ColumnType::Timestamp),
            }
            .map(Cow::Owned)),
            Some(Cell::Error(e)) => {
                Err(RowError { column: Some(plan[i].0.clone()), reason: format!("the cell holds the Excel error {e}") })
            }
        },
        Some(number),
        raw,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excel_serials_are_local_dates_and_times_in_either_date_system() {
        assert_eq!(serial_to_iso(45352.0, false, false).as_deref(), Some("2024-03-01"));
        assert_eq!(serial_to_iso(45352.354166666664, false, false).as_deref(), Some("2024-03-01T08:30:00"));
        assert_eq!(serial_to_iso(45352.5000005787, false, false).as_deref(), Some("2024-03-01T12:00:00.050"));
        // Before the fictitious 29 February 1900.
        assert_eq!(serial_to_iso(1.0, false, false).as_deref(), Some("1900-01-01"));
        assert_eq!(serial_to_iso(61.0, false, false).as_deref(), Some("1900-03-01"));
        assert_eq!(serial_to_iso(0.0, true, true).as_deref(), Some("1904-01-01T00:00:00"));
        assert_eq!(serial_to_iso(0.0, true, false).as_deref(), Some("1904-01-01"));
        assert_eq!(serial_to_iso(-1.0, false, false), None);
    }

    #[test]
    fn numbers_are_read_to_the_fifteen_digits_excel_keeps() {
        let cases = [
            ("0.30000000000000004", "0.3"),
            ("99999.99000000001", "99999.99"),
            ("1.2E1", "12"),
            ("1250.5", "1250.5"),
            ("-0.15", "-0.15"),
            ("1E-7", "0.0000001"),
            ("123456789012345678", "123456789012346000"),
            ("0", "0"),
            ("42", "42"),
        ];
        for (v, shown) in cases {
            assert_eq!(excel_number(v).as_deref(), Some(shown), "{v}");
        }
        assert_eq!(excel_number("#N/A"), None);
    }

    #[test]
    fn date_formats_are_told_from_number_formats() {
        for code in ["dd/mm/yyyy", "yyyy-mm-dd hh:mm", "[h]:mm:ss", "d-mmm", "[$-40C]dddd d mmmm yyyy", "m/d/yy"] {
            assert!(is_date_format(code), "{code}");
        }
        for code in ["0.00", "#,##0", "[Red]0.00", "\"days\" 0", "0.00_);[Red](0.00)", "0%", "@"] {
            assert!(!is_date_format(code), "{code}");
        }
        assert!(builtin_date(14) && builtin_date(22) && !builtin_date(2) && !builtin_date(49));
    }

    #[test]
    fn cell_references_give_columns() {
        assert_eq!(column_of("A1"), Some(0));
        assert_eq!(column_of("Z9"), Some(25));
        assert_eq!(column_of("AA10"), Some(26));
        assert_eq!(column_of("XFD1"), Some(16_383));
        assert_eq!(column_of("XFE1"), None);
        assert_eq!(column_of("17"), None);
    }
}
