//! The one way commands print tables: rows (serde structs, or query results as Arrow batches) as aligned
//! columns for people, or as CSV or JSON for tools (`--format table|csv|json`).

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{CellAlignment, Table};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
pub use crate::cli::OutputFormat;

/// Prints rows of a serde struct (field names are the column names).
pub fn print_rows<T: Serialize + DeserializeOwned>(rows: &[T], format: OutputFormat) -> Result<(), CliError> {
    print_batches(&[rows_batch(rows)?], format)
}

/// Rows of a serde struct as one record batch (its schema traced from the struct).
pub fn rows_batch<T: Serialize + DeserializeOwned>(rows: &[T]) -> Result<RecordBatch, CliError> {
    let schema = lakehouse::storage::rows::schema_of::<T>()?;
    Ok(lakehouse::storage::rows::to_batch(&schema, rows)?)
}

/// Prints record batches (all of one schema) on stdout.
pub fn print_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<(), CliError> {
    let mut out = Vec::new();
    match format {
        OutputFormat::Table => {
            out.extend(table_text(batches)?.into_bytes());
            out.push(b'\n');
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::writer::ArrayWriter::new(&mut out);
            w.write_batches(&batches.iter().collect::<Vec<_>>())?;
            w.finish()?;
            out.push(b'\n');
        }
    }
    std::io::stdout().write_all(&out)?;
    Ok(())
}

/// Aligned columns, numbers to the right, two spaces apart, no borders; trailing spaces trimmed.
fn table_text(batches: &[RecordBatch]) -> Result<String, CliError> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else { return Ok(String::new()) };
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(schema.fields().iter().map(|f| f.name().as_str()));
    let options = FormatOptions::default().with_null("-").with_display_error(true);
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            table.add_row(formatters.iter().map(|f| f.value(row).to_string()));
        }
    }
    for (i, field) in schema.fields().iter().enumerate() {
        if let Some(column) = table.column_mut(i) {
            column.set_padding((0, 2));
            if field.data_type().is_numeric() {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    Ok(table.trim_fmt())
}
