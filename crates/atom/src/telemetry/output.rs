//! Where log lines go: a buffer shared by the threads that log, written to stdout by one
//! writer thread in batches.
//!
//! A line is appended under a mutex (a copy of a hundred bytes) and the logging thread goes
//! on. The writer thread sleeps until a line arrives, then waits [`GATHER`] for more, and
//! writes everything that gathered in one `write`. So under load a system call and a
//! wake-up of the writer serve hundreds of lines (waking it per line, as a channel to it
//! does, costs about a tenth of a trivial route's throughput), and at rest a line is out within
//! [`GATHER`].
//!
//! Invariants: lines are written whole and in the order they were appended (one writer);
//! none is dropped: past [`MAX_BUFFERED`] bytes a logging thread waits for the writer (the
//! back-pressure of a slow stdout); dropping the [`OutputGuard`] writes out what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer lets lines gather after the first one.
const GATHER: Duration = Duration::from_millis(5);
/// Bytes buffered at most before logging threads wait.
const MAX_BUFFERED: usize = 4 << 20;

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines (or the end).
    lines: Condvar,
    /// Logging threads wait here while the buffer is full.
    drained: Condvar,
}

#[derive(Debug, Default)]
struct State {
    buffer: Vec<u8>,
    /// The guard was dropped: the writer writes what is left and stops.
    closing: bool,
    /// The writer has stopped (or never started): lines are written by their own thread.
    gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the logging threads append their lines. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Output {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written every line appended before.
#[derive(Debug)]
#[must_use = "dropping the guard stops the log writer"]
pub struct OutputGuard {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// Starts the writer thread, which writes to `out`.
pub fn start(out: impl Write + Send + 'static) -> (Output, OutputGuard) {
    let shared = Arc::new(Shared::default());
    let writer = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new().name("atom-log".to_owned()).spawn(move || write_out(&shared, out))
    };
    // Without a thread (the system refused one), lines are written by the logging threads.
    let writer = writer.ok();
    if writer.is_none() {
        shared.lock().gone = true;
    }
    (Output { shared: Arc::clone(&shared) }, OutputGuard { shared, writer })
}

fn write_out(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.buffer.is_empty() && !state.closing {
            state = shared.lines.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if !state.closing {
            drop(state);
            std::thread::sleep(GATHER);
            state = shared.lock();
        }
        std::mem::swap(&mut state.buffer, &mut batch);
        let closing = state.closing;
        drop(state);
        shared.drained.notify_all();
        // A failing stdout (closed pipe) loses these lines; nothing better can be done with
        // them, and the server must not stop for it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closing {
            let mut state = shared.lock();
            if state.buffer.is_empty() {
                // Under the lock: every line appended before this is written.
                state.gone = true;
                return;
            }
        }
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.lines.notify_all();
        self.shared.drained.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Output {
    /// Appends `line` (whole lines, `\n` included) for the writer thread.
    pub fn append(&self, line: &[u8]) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.gone {
            // No writer any more (shutdown is over, or there never was one): write directly,
            // under the lock, so that lines from several threads stay whole. A failing stdout
            // loses the line, as in the writer thread.
            let _ = std::io::stdout().lock().write_all(line);
            return;
        }
        while state.buffer.len() >= MAX_BUFFERED && !state.gone {
            state = shared.drained.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let first = state.buffer.is_empty();
        state.buffer.extend_from_slice(line);
        drop(state);
        if first {
            shared.lines.notify_one();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A `Write` into memory that another thread can read.
    #[derive(Clone, Default)]
    pub struct Memory(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_order_and_all_by_the_end() {
        let memory = Memory::default();
        let (output, guard) = start(memory.clone());
        std::thread::scope(|s| {
            for t in 0..4 {
                let output = output.clone();
                s.spawn(move || {
                    for i in 0..5000 {
                        let line = format!("thread {t} line {i:05} {}\n", "x".repeat(i % 100));
                        output.append(line.as_bytes());
                    }
                });
            }
        });
        drop(guard);
        let text = String::from_utf8(memory.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000, "every line, once");
        for t in 0..4 {
            let own: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|rest| rest[..5].parse().expect("a number"))
                .collect();
            assert_eq!(own, (0..5000).collect::<Vec<_>>(), "thread {t}'s lines whole and in order");
        }
    }

    #[test]
    fn a_line_at_rest_is_written_within_moments() {
        let memory = Memory::default();
        let (output, _guard) = start(memory.clone());
        output.append(b"one line\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while memory.0.lock().expect("lock").is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*memory.0.lock().expect("lock"), b"one line\n");
    }
}
