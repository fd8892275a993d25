//! The live view and the report: what is shown each interval while tracing and the summary at
//! the end. When stderr is a terminal, a full-screen table (ratatui, drawn on stderr) sortable
//! with `s`, whose rows the arrow keys select and Enter opens (with `--stacks`: the word's top
//! waiter and waker stacks; Esc goes back); otherwise (or with `--view plain`) plain text
//! lines; nothing with `--view quiet`.
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
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table, TableState},
};

use super::{summary::Drops, text as render};
use crate::{
    aggregate::{
        stacks::WordStacks,
        table::{self, Row, SortKey},
    },
    decode::WordKey,
};

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

/// Stacks shown per side when a word is opened, and frames per stack.
const DETAIL_STACKS: usize = 3;
const DETAIL_FRAMES: usize = 6;

/// The live view of one session.
pub struct Live {
    mode: Mode,
    sort: SortKey,
    snapshot: Snapshot,
    /// The selected row of the full-screen table (an index into the sorted rows).
    selected: usize,
    /// The word opened with Enter, if one is.
    opened: Option<WordKey>,
    /// The latest stacks of the opened word (`--stacks`).
    stacks: Option<WordStacks>,
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
            selected: 0,
            opened: None,
            stacks: None,
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

    /// Handles pending key presses; true if the user asked to stop (`q`, Esc on the table, or
    /// Ctrl-C). Up and Down select a row, Enter opens its word, Esc closes it.
    pub fn poll_quit(&mut self) -> io::Result<bool> {
        if !matches!(self.mode, Mode::Screen(_)) {
            return Ok(false);
        }
        let mut redraw = false;
        while event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => match key.code {
                    KeyCode::Esc if self.opened.is_some() => {
                        self.opened = None;
                        redraw = true;
                    }
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(true),
                    KeyCode::Up => {
                        self.selected = self.selected.saturating_sub(1);
                        redraw = true;
                    }
                    KeyCode::Down => {
                        let last = self.snapshot.rows.len().saturating_sub(1);
                        self.selected = (self.selected + 1).min(last);
                        redraw = true;
                    }
                    KeyCode::Enter => {
                        self.opened = self.snapshot.rows.get(self.selected).map(|r| r.word);
                        self.stacks = None;
                        redraw = true;
                    }
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

    /// Whether the view shows the rows each interval (all but `--view quiet`).
    pub fn shows_rows(&self) -> bool {
        !matches!(self.mode, Mode::Quiet)
    }

    /// The word opened in the full-screen view, if one is.
    pub fn opened(&self) -> Option<WordKey> {
        self.opened
    }

    /// Shows `stacks`, the latest of the opened word (`--stacks`; `None`: none yet).
    pub fn set_stacks(&mut self, stacks: Option<WordStacks>) -> io::Result<()> {
        self.stacks = stacks;
        if self.opened.is_some() {
            self.draw()?;
        }
        Ok(())
    }

    fn draw(&mut self) -> io::Result<()> {
        table::sort_rows(&mut self.snapshot.rows, self.sort);
        self.selected = self
            .selected
            .min(self.snapshot.rows.len().saturating_sub(1));
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
                let screen = ScreenView {
                    title: &self.title,
                    snapshot,
                    sort: self.sort,
                    notes: &self.notes,
                    selected: self.selected,
                    opened: self.opened.map(|word| {
                        let stacks = self.stacks.as_ref().filter(|s| s.word == word);
                        (word, stacks)
                    }),
                };
                terminal.draw(|frame| screen.render(frame))?;
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

/// What the full-screen view shows: the table, or the word opened from it.
struct ScreenView<'a> {
    title: &'a str,
    snapshot: &'a Snapshot,
    sort: SortKey,
    notes: &'a [String],
    selected: usize,
    /// The opened word and its stacks, if known.
    opened: Option<(WordKey, Option<&'a WordStacks>)>,
}

impl ScreenView<'_> {
    fn render(&self, frame: &mut ratatui::Frame<'_>) {
        let snapshot = self.snapshot;
        let keys = if self.opened.is_some() {
            "Esc: back, q: quit"
        } else {
            "↑↓: select, Enter: open, s: sort, q: quit"
        };
        let header = format!(
            "futexscope: {}  {:.0}s  {} words  {} events  sorted by {}  ({keys})",
            self.title,
            snapshot.elapsed_s,
            snapshot.rows.len(),
            snapshot.events,
            self.sort.describe().0
        );
        let notes: Vec<Line> = self
            .notes
            .iter()
            .map(|n| Line::raw(format!("note: {n}")))
            .collect();
        let [top, notes_area, status, body] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(notes.len() as u16),
            Constraint::Length(1),
            Constraint::Min(1),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(header), top);
        frame.render_widget(Paragraph::new(notes), notes_area);
        let status_line = match render::drops_line(&snapshot.drops) {
            Some(text) => Line::styled(
                text,
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            None => Line::raw("no records dropped"),
        };
        frame.render_widget(Paragraph::new(status_line), status);
        match self.opened {
            Some((word, stacks)) => {
                let row = snapshot.rows.iter().find(|r| r.word == word);
                frame.render_widget(Paragraph::new(detail(word, row, stacks)), body);
            }
            None => self.render_table(frame, body),
        }
    }

    fn render_table(&self, frame: &mut ratatui::Frame<'_>, area: Rect) {
        let mut state = TableState::default().with_selected(Some(self.selected));
        frame.render_stateful_widget(table(&self.snapshot.rows, self.sort), area, &mut state);
    }
}

/// The lines of an opened word: its label, then its top waiter stacks (waits, wait time, site
/// and leaf frames) and waker stacks (wakes, threads woken, wait time ended).
fn detail(word: WordKey, row: Option<&Row>, stacks: Option<&WordStacks>) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let label = row.map(|r| r.label.as_str()).unwrap_or_default();
    let mut lines = vec![Line::styled(format!("{} {label}", word.describe()), bold)];
    let Some(stacks) = stacks else {
        lines.push(Line::raw(
            "no stacks for this word yet (with --stacks, those of waits that slept and wakes \
             that woke, at each refresh)",
        ));
        return lines;
    };
    let frames = |lines: &mut Vec<Line<'static>>, frames: &[String]| {
        for frame in frames.iter().take(DETAIL_FRAMES) {
            lines.push(Line::raw(format!("        {frame}")));
        }
        if frames.len() > DETAIL_FRAMES {
            lines.push(Line::raw(format!(
                "        … {} more frames",
                frames.len() - DETAIL_FRAMES
            )));
        }
    };
    lines.push(Line::styled(
        format!("waiter stacks ({}):", stacks.waiter_stacks.len()),
        bold,
    ));
    for waiter in stacks.waiter_stacks.iter().take(DETAIL_STACKS) {
        let times = &waiter.wait_ns;
        lines.push(Line::raw(format!(
            "  waits {}  total {:.3} ms  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  {}",
            waiter.waits,
            ms(times.total),
            ms(times.p50),
            ms(times.p99),
            ms(times.max),
            waiter.stack.site
        )));
        frames(&mut lines, &waiter.stack.frames);
    }
    lines.push(Line::styled(
        format!("waker stacks ({}):", stacks.waker_stacks.len()),
        bold,
    ));
    for waker in stacks.waker_stacks.iter().take(DETAIL_STACKS) {
        lines.push(Line::raw(format!(
            "  wakes {}  woke {}  ended {:.3} ms of waits  {}",
            waker.wakes,
            waker.woken,
            ms(waker.blamed_wait_ns),
            waker.stack.site
        )));
        frames(&mut lines, &waker.stack.frames);
    }
    lines
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
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
    Table::new(body, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend, buffer::Buffer};

    use super::*;
    use crate::aggregate::{
        stacks::{Blame, ShownStack, WaitTimes, WaiterStack, WakerStack},
        table::tests::row,
    };

    fn stack(id: u32, site: &str, frames: &[&str]) -> ShownStack {
        ShownStack {
            id,
            frames: frames.iter().map(|f| (*f).to_owned()).collect(),
            site: site.to_owned(),
            truncated: None,
            symbols: vec![],
        }
    }

    fn word_stacks(word: WordKey) -> WordStacks {
        WordStacks {
            word,
            waiter_stacks: vec![WaiterStack {
                stack: stack(
                    0,
                    "pthread_cond_wait ← worker (w.c:9)",
                    &[
                        "__futex_abstimed_wait_common",
                        "pthread_cond_wait",
                        "worker (w.c:9)",
                    ],
                ),
                waits: 42,
                wait_ns: WaitTimes {
                    total: 7_000_000,
                    p50: 100_000,
                    p99: 900_000,
                    max: 1_000_000,
                },
                woken_by: vec![Blame {
                    stack: 1,
                    waits: 40,
                    wait_ns: 6_000_000,
                }],
            }],
            waker_stacks: vec![WakerStack {
                stack: stack(
                    1,
                    "pthread_cond_signal ← producer (p.c:3)",
                    &["pthread_cond_signal", "producer (p.c:3)"],
                ),
                wakes: 40,
                woken: 41,
                blamed_wait_ns: 6_000_000,
                ended: vec![],
            }],
        }
    }

    fn text(buffer: &Buffer) -> String {
        let area = buffer.area;
        (0..area.height)
            .map(|y| {
                (0..area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    fn draw(screen: &ScreenView<'_>) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(160, 30)).unwrap();
        terminal.draw(|frame| screen.render(frame)).unwrap();
        terminal.backend().buffer().clone()
    }

    fn snapshot() -> Snapshot {
        let mut rows = vec![row(0x10, 9, 0), row(0x20, 5, 0)];
        rows[0].label = "waited at pthread_cond_wait ← worker (w.c:9)".into();
        Snapshot {
            elapsed_s: 3.0,
            rows,
            events: 14,
            drops: Drops::default(),
        }
    }

    #[test]
    fn the_selected_row_is_highlighted_and_unnamed_words_show_their_site() {
        let snapshot = snapshot();
        let screen = ScreenView {
            title: "t",
            snapshot: &snapshot,
            sort: SortKey::Waits,
            notes: &[],
            selected: 1,
            opened: None,
        };
        let buffer = draw(&screen);
        let shown = text(&buffer);
        assert!(shown.contains("Enter: open"), "{shown}");
        // The label column keeps the end of the site.
        assert!(shown.contains("(w.c:9)"), "{shown}");
        let line = |needle: &str| {
            shown
                .lines()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in {shown}")) as u16
        };
        let (first, second) = (line("0x10"), line("0x20"));
        let reversed = |y: u16| buffer[(1, y)].modifier.contains(Modifier::REVERSED);
        assert!(!reversed(first) && reversed(second), "{shown}");
    }

    #[test]
    fn an_opened_word_shows_its_top_waiter_and_waker_stacks() {
        let snapshot = snapshot();
        let word = snapshot.rows[0].word;
        let stacks = word_stacks(word);
        let screen = ScreenView {
            title: "t",
            snapshot: &snapshot,
            sort: SortKey::Waits,
            notes: &[],
            selected: 0,
            opened: Some((word, Some(&stacks))),
        };
        let shown = text(&draw(&screen));
        for expected in [
            "Esc: back",
            "waited at pthread_cond_wait ← worker (w.c:9)",
            "waiter stacks (1):",
            "waits 42  total 7.000 ms  p50 0.100 ms  p99 0.900 ms  max 1.000 ms  pthread_cond_wait ← worker (w.c:9)",
            "__futex_abstimed_wait_common",
            "waker stacks (1):",
            "wakes 40  woke 41  ended 6.000 ms of waits  pthread_cond_signal ← producer (p.c:3)",
            "producer (p.c:3)",
        ] {
            assert!(shown.contains(expected), "{expected} in\n{shown}");
        }
        let screen = ScreenView {
            opened: Some((word, None)),
            ..screen
        };
        assert!(text(&draw(&screen)).contains("no stacks for this word yet"));
    }
}
