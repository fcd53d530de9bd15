//! What commands print: results on stdout (so they can be piped), errors on stderr.
//! Logs go to stderr too (see `logging`).

use std::io::Write;

/// One line of command output on stdout. A closed pipe (`| head`) is not an error.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// One line on stderr.
pub fn error_line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// How admin commands print their result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

/// Prints `rows` (a header first) as a table or CSV.
pub fn rows(format: Format, header: &[&str], rows: &[Vec<String>]) {
    match format {
        Format::Csv => {
            line(
                &header
                    .iter()
                    .map(|h| csv_field(h))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            for row in rows {
                line(
                    &row.iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
        }
        Format::Table | Format::Json => {
            let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
            for row in rows {
                for (width, field) in widths.iter_mut().zip(row) {
                    *width = (*width).max(field.chars().count());
                }
            }
            let render = |fields: Vec<&str>| {
                fields
                    .iter()
                    .zip(&widths)
                    .map(|(f, w)| format!("{f:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            line(&render(header.to_vec()));
            for row in rows {
                line(&render(row.iter().map(String::as_str).collect()));
            }
        }
    }
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_with_separators_are_quoted() {
        assert_eq!(super::csv_field("plain"), "plain");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
