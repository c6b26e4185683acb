//! Crawl progress: an indicatif bar when stderr is a terminal, otherwise one `tracing::info!`
//! line every [`LOG_EVERY`].

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// Interval of the plain progress lines.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Counters shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub visited: u64,
    pub known: u64,
    pub reachable: u64,
    pub in_flight: u64,
}

/// The progress display of one crawl.
pub enum Progress {
    Bar(ProgressBar),
    Log { last: Instant },
    Hidden,
}

impl Progress {
    /// A bar on an interactive stderr, log lines otherwise.
    pub fn for_stderr() -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} visited, {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            Progress::Log { last: Instant::now() }
        }
    }

    /// Shows `c` (log lines at most every [`LOG_EVERY`]).
    pub fn update(&mut self, c: Counts) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(c.known);
                bar.set_position(c.visited);
                bar.set_message(format!("{} reachable, {} in flight", c.reachable, c.in_flight));
            }
            Progress::Log { last } => {
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    tracing::info!(
                        visited = c.visited,
                        known = c.known,
                        reachable = c.reachable,
                        in_flight = c.in_flight,
                        "crawl progress"
                    );
                }
            }
            Progress::Hidden => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
