//! Parquet files: columns are matched by name and read through their text form, so the same parsing and checks
//! apply as for text formats (a Parquet `int32` fits an `int` column, a timestamp a `timestamp` column).

use arrow::array::Array;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{ReadError, RowEmitter};

/// Reads row group by row group from the file (never the whole file in memory).
pub fn read(input: std::fs::File, rows: &mut RowEmitter<'_, '_>) -> Result<(), ReadError> {
    if input.metadata()?.len() == 0 {
        return Ok(());
    }
    let malformed =
        |e: parquet::errors::ParquetError| ReadError::Malformed(format!("not a readable Parquet file: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(input).map_err(malformed)?;
    let file_schema = builder.schema().clone();
    let names: Vec<String> = file_schema.fields().iter().map(|f| f.name().clone()).collect();
    let matched = rows.match_fields(&names, "the file")?;
    if !matched.missing.is_empty() {
        let missing = matched.missing.join(", ");
        return Err(ReadError::Malformed(format!("the file lacks the declared column(s) {missing}")));
    }
    rows.note_new_fields(&matched.extra)?;
    let positions = matched.positions;
    // The raw text of a bad row names its fields as the file does.
    let field_names: Vec<String> = positions.iter().map(|&p| names[p].clone()).collect();
    let reader = builder.with_batch_size(8192).build().map_err(malformed)?;
    let options = FormatOptions::default().with_display_error(true);
    for batch in reader {
        let batch = batch.map_err(|e| ReadError::Malformed(format!("cannot decode a row group: {e}")))?;
        let columns: Vec<_> = positions.iter().map(|&p| batch.column(p).clone()).collect();
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ReadError::Malformed(format!("unsupported column type: {e}")))?;
        for row in 0..batch.num_rows() {
            let cell = |i: usize| (!columns[i].is_null(row)).then(|| formatters[i].value(row).to_string());
            let raw = || {
                let obj: serde_json::Map<String, serde_json::Value> = field_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), cell(i).map_or(serde_json::Value::Null, Into::into)))
                    .collect();
                serde_json::to_vec(&obj).unwrap_or_default()
            };
            rows.row(|i| Ok(cell(i).map(Into::into)), None, raw)?;
        }
    }
    Ok(())
}
