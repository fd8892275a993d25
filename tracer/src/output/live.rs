//! The live view and the report: what is shown each interval while tracing and the summary at
//! the end. When stderr is a terminal, a full-screen table (ratatui, drawn on stderr) sortable
//! with `s`; otherwise (or with `--view plain`) plain text lines; nothing with `--view quiet`.
//! Plain lines and the summary go to the report's writer: stderr, or the `-o FILE`. Nothing of
//! futexscope's ever goes to stdout, which belongs to the traced command.

use std::{
    io::{self, Write},
    time::Duration,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Alignment, Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
};

use super::{summary::Drops, text as render};
use crate::aggregate::table::{self, Row, SortKey};

/// How to show progress while tracing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Full-screen table on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain text lines each interval.
    Plain,
    /// Nothing until the summary.
    Quiet,
}

impl View {
    /// Every view.
    pub const ALL: [View; 3] = [View::Auto, View::Plain, View::Quiet];

    /// The view's name (`--view NAME`) and what it shows.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            View::Auto => (
                "auto",
                "full-screen table on a terminal, plain lines otherwise",
            ),
            View::Plain => ("plain", "plain text lines each interval"),
            View::Quiet => ("quiet", "nothing until the summary"),
        }
    }
}

/// Width of the label column of the full-screen table.
const LABEL_WIDTH: usize = 20;
/// Rows shown per interval in plain mode.
const PLAIN_TOP_ROWS: usize = 10;

/// The latest snapshot, kept to redraw on resize and re-sort.
#[derive(Default)]
struct Snapshot {
    elapsed_s: f64,
    rows: Vec<Row>,
    events: u64,
    drops: Drops,
}

/// The live view of one session.
pub struct Live {
    mode: Mode,
    sort: SortKey,
    snapshot: Snapshot,
    title: String,
    /// Notes shown under the header of the full-screen view.
    notes: Vec<String>,
    /// Where plain lines and the summary go: stderr or the `-o` file.
    out: Box<dyn Write>,
}

/// A full-screen view drawn on stderr.
type Screen = Terminal<CrosstermBackend<io::Stderr>>;

enum Mode {
    Quiet,
    Plain,
    Screen(Box<Screen>),
}

/// Puts the terminal behind stderr in raw mode on the alternate screen.
fn enter_screen() -> io::Result<Screen> {
    terminal::enable_raw_mode()?;
    execute!(io::stderr(), EnterAlternateScreen)?;
    Terminal::new(CrosstermBackend::new(io::stderr()))
}

/// Gives the terminal back as it was.
fn leave_screen() -> io::Result<()> {
    terminal::disable_raw_mode()?;
    execute!(io::stderr(), LeaveAlternateScreen, cursor::Show)
}

impl Live {
    /// A live view in style `view` titled `title`, whose plain lines and summary go to `out`;
    /// `terminal` says whether stderr is a terminal (where the full-screen view is drawn).
    pub fn new(
        view: View,
        sort: SortKey,
        terminal: bool,
        title: String,
        out: Box<dyn Write>,
    ) -> io::Result<Live> {
        let mode = match view {
            View::Auto if terminal => Mode::Screen(Box::new(enter_screen()?)),
            View::Auto | View::Plain => Mode::Plain,
            View::Quiet => Mode::Quiet,
        };
        Ok(Live {
            mode,
            sort,
            snapshot: Snapshot::default(),
            title,
            notes: Vec::new(),
            out,
        })
    }

    /// Writes `text` (the summary) to the report's writer. A closed pipe (`2>&1 | head`) must
    /// not stop tracing or lose the output files: write errors are ignored.
    pub fn print(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Tells the user something about the session: on stderr, or in the full-screen view.
    pub fn note(&mut self, text: &str) {
        match self.mode {
            Mode::Screen(_) => self.notes.push(text.to_owned()),
            Mode::Plain | Mode::Quiet => eprintln!("futexscope: note: {text}"),
        }
    }

    /// Handles pending key presses; true if the user asked to stop (`q`, Esc or Ctrl-C).
    pub fn poll_quit(&mut self) -> io::Result<bool> {
        if !matches!(self.mode, Mode::Screen(_)) {
            return Ok(false);
        }
        let mut redraw = false;
        while event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(true),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(true);
                    }
                    KeyCode::Char('s') => {
                        self.sort = self.sort.next();
                        redraw = true;
                    }
                    _ => {}
                },
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if redraw {
            self.draw()?;
        }
        Ok(false)
    }

    /// Shows a new snapshot.
    pub fn update(
        &mut self,
        elapsed_s: f64,
        rows: Vec<Row>,
        events: u64,
        drops: &Drops,
    ) -> io::Result<()> {
        self.snapshot = Snapshot {
            elapsed_s,
            rows,
            events,
            drops: *drops,
        };
        self.draw()
    }

    fn draw(&mut self) -> io::Result<()> {
        table::sort_rows(&mut self.snapshot.rows, self.sort);
        let snapshot = &self.snapshot;
        match &mut self.mode {
            Mode::Quiet => Ok(()),
            Mode::Plain => {
                // Like the summary, plain lines never stop tracing when their reader is gone.
                let out = &mut self.out;
                let text = render::interval(
                    snapshot.elapsed_s,
                    &snapshot.rows,
                    snapshot.events,
                    &snapshot.drops,
                    PLAIN_TOP_ROWS,
                );
                let _ = out.write_all(text.as_bytes());
                if let Some(line) = render::drops_line(&snapshot.drops) {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
                Ok(())
            }
            Mode::Screen(terminal) => {
                let header = format!(
                    "futexscope: {}  {:.0}s  {} words  {} events  sorted by {}  (s: sort, q: quit)",
                    self.title,
                    snapshot.elapsed_s,
                    snapshot.rows.len(),
                    snapshot.events,
                    self.sort.describe().0
                );
                let drops = render::drops_line(&snapshot.drops);
                let sort = self.sort;
                let notes: Vec<Line> = self
                    .notes
                    .iter()
                    .map(|n| Line::raw(format!("note: {n}")))
                    .collect();
                terminal.draw(|frame| {
                    let [top, notes_area, status, body] = Layout::vertical([
                        Constraint::Length(1),
                        Constraint::Length(notes.len() as u16),
                        Constraint::Length(1),
                        Constraint::Min(1),
                    ])
                    .areas(frame.area());
                    frame.render_widget(Paragraph::new(header), top);
                    frame.render_widget(Paragraph::new(notes), notes_area);
                    let status_line = match &drops {
                        Some(text) => Line::styled(
                            text.as_str(),
                            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                        ),
                        None => Line::raw("no records dropped"),
                    };
                    frame.render_widget(Paragraph::new(status_line), status);
                    frame.render_widget(table(&snapshot.rows, sort), body);
                })?;
                Ok(())
            }
        }
    }

    /// Leaves the view, restoring the terminal; reports a failure to restore it. Notes and
    /// updates after it go nowhere.
    pub fn close(&mut self) -> io::Result<()> {
        if let Mode::Screen(_) = std::mem::replace(&mut self.mode, Mode::Quiet) {
            leave_screen()?;
        }
        Ok(())
    }
}

impl Drop for Live {
    /// Restores the terminal when a session ends early on an error.
    fn drop(&mut self) {
        if let Mode::Screen(_) = self.mode {
            let _ = leave_screen();
        }
    }
}

/// The column a sort key sorts by, as an index into [`render::HEADERS`].
fn sort_column(key: SortKey) -> usize {
    match key {
        SortKey::WaitersNow => 3,
        SortKey::MaxWaiters => 4,
        SortKey::Waits => 5,
        SortKey::WakeCalls => 6,
        SortKey::Woken => 7,
        SortKey::Timeouts => 8,
        SortKey::Spurious => 9,
        SortKey::WaitTime => 14,
        SortKey::Drift => 16,
    }
}

/// Numbers align right, the address and the label left, as in the plain table.
fn alignment(column: usize) -> Alignment {
    if column == 1 || column == 2 {
        Alignment::Left
    } else {
        Alignment::Right
    }
}

fn table(rows: &[Row], sort: SortKey) -> Table<'static> {
    let sorted = sort_column(sort);
    let header = TableRow::new(render::HEADERS.iter().enumerate().map(|(column, name)| {
        let style = Style::new().add_modifier(Modifier::BOLD);
        Cell::from(Line::from(*name).alignment(alignment(column))).style(if column == sorted {
            style.fg(Color::Yellow)
        } else {
            style
        })
    }));
    let body = rows.iter().map(|row| {
        TableRow::new(
            render::cells(row)
                .into_iter()
                .enumerate()
                .map(|(column, text)| {
                    // Labels keep their end (`…demo::SCARCE+16`), where a symbol says most.
                    let text = if column == 2 {
                        render::shorten(&text, LABEL_WIDTH)
                    } else {
                        text
                    };
                    Cell::from(Line::from(text).alignment(alignment(column)))
                }),
        )
    });
    let widths = [
        Constraint::Length(7),
        Constraint::Length(14),
        Constraint::Length(LABEL_WIDTH as u16),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
    ];
    Table::new(body, widths).header(header)
}
