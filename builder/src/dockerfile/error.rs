//! Errors of the Dockerfile frontend.

use std::fmt;

/// A parse or resolve error located at a line of a Dockerfile.
///
/// Displays as `Dockerfile:7: unknown instruction: RUNN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// File name shown in the message (`Dockerfile` unless renamed with
    /// [`ParseError::with_file`]).
    pub file: String,
    /// 1-based line number; 0 when the problem concerns the whole file.
    pub line: usize,
    pub message: String,
}

impl ParseError {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            file: "Dockerfile".to_string(),
            line,
            message: message.into(),
        }
    }

    /// Replaces the file name shown in the message (e.g. `build/app.Dockerfile`).
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = file.into();
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}
