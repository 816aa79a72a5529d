//! One error type for the whole crate. Every variant carries enough context to act on:
//! the op and both shapes, the file and what is wrong, the GPU message.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An op got operands whose shapes do not fit together.
    Shape { op: &'static str, msg: String },
    /// No usable adapter, device creation failed, device lost, out of memory, validation error.
    Gpu(String),
    /// A tensor is larger than what one storage binding of this adapter may hold.
    TooLarge { op: &'static str, bytes: u64, limit: u64 },
    /// A data or checkpoint file is missing, truncated or corrupt.
    Data { path: String, msg: String },
    /// A bad option or argument.
    Config(String),
    /// A loss or gradient became NaN or Inf.
    NonFinite { step: u64, what: String },
    /// An I/O failure on a named file.
    Io { path: String, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
    pub fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), msg: e.to_string() }
    }
    pub fn data(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::Data { path: path.as_ref().display().to_string(), msg: msg.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, msg } => write!(f, "{op}: {msg}"),
            Error::Gpu(m) => write!(f, "GPU error: {m}"),
            Error::TooLarge { op, bytes, limit } => {
                write!(f, "{op}: tensor of {bytes} bytes exceeds this adapter's storage binding limit of {limit} bytes")
            }
            Error::Data { path, msg } => write!(f, "{path}: {msg}"),
            Error::Config(m) => write!(f, "{m}"),
            Error::NonFinite { step, what } => write!(f, "non-finite value at step {step}: {what}"),
            Error::Io { path, msg } => write!(f, "{path}: {msg}"),
        }
    }
}

impl std::error::Error for Error {}
