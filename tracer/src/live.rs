//! The live view: what is shown each interval while tracing. Plain text lines when stdout is
//! not a terminal (or with `--view plain`), nothing with `--view quiet`.

use std::io::{self, Write};

use crate::{
    render,
    report::{self, Drops, Row, SortKey},
    session::View,
};

/// Rows shown per interval in plain mode.
const PLAIN_TOP_ROWS: usize = 10;

/// The live view of one session.
pub struct Live {
    view: View,
    sort: SortKey,
}

impl Live {
    /// A live view in style `view`; `terminal` says whether stdout is a terminal.
    pub fn new(view: View, sort: SortKey, terminal: bool) -> io::Result<Live> {
        let view = match view {
            View::Auto if !terminal => View::Plain,
            View::Auto => View::Plain,
            other => other,
        };
        Ok(Live { view, sort })
    }

    /// Whether the user asked to stop from the view itself.
    pub fn poll_quit(&mut self) -> io::Result<bool> {
        Ok(false)
    }

    /// Shows a new snapshot.
    pub fn update(
        &mut self,
        elapsed_s: f64,
        mut rows: Vec<Row>,
        events: u64,
        drops: &Drops,
    ) -> io::Result<()> {
        if self.view != View::Plain {
            return Ok(());
        }
        report::sort_rows(&mut rows, self.sort);
        let mut out = io::stdout().lock();
        out.write_all(
            render::interval(elapsed_s, &rows, events, drops, PLAIN_TOP_ROWS).as_bytes(),
        )?;
        if let Some(line) = render::drops_line(drops) {
            writeln!(out, "{line}")?;
        }
        out.flush()
    }

    /// Leaves the view (restores the terminal).
    pub fn close(self) -> io::Result<()> {
        Ok(())
    }
}
