//! Where decoded records go besides the tables: the `--events` lines and the streamed export.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
};

use super::TraceError;
use crate::{
    aggregate::{
        labels::Labels,
        timeline::{WINDOW_NS, WindowStats},
    },
    decode::Record,
    output::{events, export},
};

/// Where decoded records go besides the tables: counted, written as JSON lines
/// (`--events`), streamed to the export (`--export`).
pub(super) struct RecordSink {
    pub(super) count: u64,
    pub(super) lines: Option<(PathBuf, BufWriter<File>)>,
    pub(super) export: Option<(PathBuf, export::Export<BufWriter<File>>)>,
}

impl RecordSink {
    pub(super) fn push(&mut self, record: &Record) -> Result<(), TraceError> {
        self.count += 1;
        if let Some((path, out)) = &mut self.lines {
            events::write_line(out, record).map_err(|source| TraceError::Output {
                path: path.clone(),
                source,
            })?;
        }
        if let Some((_, export)) = &mut self.export {
            export.push(record);
        }
        Ok(())
    }

    /// Writes the export's items that its window has passed, named by what `labels` know.
    pub(super) fn write_ready(&mut self, labels: &Labels) -> Result<(), TraceError> {
        if let Some((path, export)) = &mut self.export {
            export
                .write_ready(names(labels))
                .map_err(|source| TraceError::Output {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Writes the rest of the export and ends it; says what fell out of its window.
    pub(super) fn finish_export(
        &mut self,
        labels: &Labels,
    ) -> Result<Option<WindowStats>, TraceError> {
        let Some((path, export)) = self.export.take() else {
            return Ok(None);
        };
        export
            .finish(names(labels))
            .map(Some)
            .map_err(|source| TraceError::Output { path, source })
    }

    pub(super) fn flush(&mut self) -> Result<(), TraceError> {
        if let Some((path, out)) = &mut self.lines {
            out.flush().map_err(|source| TraceError::Output {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

fn names(labels: &Labels) -> export::Names<'_> {
    export::Names {
        words: labels.words(),
        processes: labels.processes(),
    }
}

/// The note for what fell out of the export's window, if anything did.
pub(super) fn window_note(stats: WindowStats) -> Option<String> {
    let WindowStats {
        late_records,
        early_records,
        long_waits,
        unpaired_woken,
    } = stats;
    let window_s = WINDOW_NS as f64 / 1e9;
    let parts: Vec<String> = [
        (
            late_records,
            "records arrived after the window had passed them",
        ),
        (
            early_records,
            "records were written before the window passed them, to hold at most a bounded number",
        ),
        (
            long_waits,
            "waits outlasted the window (the waiter counter includes them from the window's edge)",
        ),
        (
            unpaired_woken,
            "woken threads of wake calls were paired with no wait",
        ),
    ]
    .into_iter()
    .filter(|&(n, _)| n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    (!parts.is_empty()).then(|| format!("export ({window_s} s window): {}", parts.join("; ")))
}
