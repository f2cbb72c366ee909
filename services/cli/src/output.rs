//! Standard output for commands that print as results arrive.

use std::io::{self, BufWriter, Stdout, Write};

use crate::CliError;

/// Buffered stdout that treats a closed pipe as the reader being done, not an error
/// (`daemoneye-cli processes | head`): from then on writes are dropped and
/// [`closed`](Self::closed) tells a producer to stop.
pub struct Out {
    inner: BufWriter<Stdout>,
    closed: bool,
}

impl Out {
    /// This process's standard output.
    pub fn stdout() -> Self {
        Self {
            inner: BufWriter::with_capacity(64 * 1024, io::stdout()),
            closed: false,
        }
    }

    /// Writes `text` (buffered).
    ///
    /// # Errors
    /// [`CliError::Output`] when stdout fails other than by a closed pipe.
    pub fn write(&mut self, text: &str) -> Result<(), CliError> {
        if self.closed {
            return Ok(());
        }
        let written = self.inner.write_all(text.as_bytes());
        self.check(written)
    }

    /// Sends what is buffered to stdout.
    ///
    /// # Errors
    /// As for [`write`](Self::write).
    pub fn flush(&mut self) -> Result<(), CliError> {
        if self.closed {
            return Ok(());
        }
        let flushed = self.inner.flush();
        self.check(flushed)
    }

    /// Whether the reader has gone away.
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn check(&mut self, outcome: io::Result<()>) -> Result<(), CliError> {
        match outcome {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(error) => Err(CliError::Output(error)),
            Ok(()) => Ok(()),
        }
    }
}
