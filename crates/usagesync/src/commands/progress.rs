//! Progress bars for long steps on a terminal; nothing when stderr is not a terminal or the
//! output is JSON, so scripts and logs get clean output.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;

pub struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars when they help a person, `None` otherwise.
    pub fn for_terminal(json: bool) -> Option<Arc<dyn engine::workflow::Progress>> {
        (!json && std::io::stderr().is_terminal())
            .then(|| Arc::new(Bars { current: Mutex::new(None) }) as Arc<dyn engine::workflow::Progress>)
    }
}

impl engine::workflow::Progress for Bars {
    fn step(&self, name: &str, total: Option<u64>) {
        let mut current = self.current.lock();
        if let Some(bar) = current.take() {
            bar.finish_and_clear();
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        *current = Some(bar);
    }

    fn advance_to(&self, done: u64) {
        if let Some(bar) = self.current.lock().as_ref() {
            bar.set_position(done);
        }
    }

    fn done(&self) {
        if let Some(bar) = self.current.lock().take() {
            bar.finish_and_clear();
        }
    }
}
